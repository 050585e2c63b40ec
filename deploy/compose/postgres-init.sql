-- compose.yaml runs this once, on an empty data directory: the `test` database the test suite expects beside
-- Clarion's own `clarion` (tests/conftest.py: CLARION_TEST_POSTGRES_URL).
CREATE DATABASE test;
