"""The store owns its tables: no statement on notifications, idempotency keys, deliveries or delivery attempts is
written anywhere else, in SQL or through the ORM."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3] / "services" / "clarion"
TABLES = "notifications|idempotency_keys|deliveries|delivery_attempts"
# A statement names its table after one of these keywords; the ORM reaches the tables through their row classes.
STATEMENT = re.compile(rf"\b(FROM|JOIN|UPDATE|INTO|TABLE|USING)\s+({TABLES})\b")
ORM = re.compile(r"\b(NotificationRow|IdempotencyKeyRow|DeliveryRow|DeliveryAttemptRow)\b")
# The store itself, the schema's description (the ORM models) and the migrations, which are history.
OWNERS = (ROOT / "delivery" / "store", ROOT / "notifications" / "models.py", ROOT / "migrations")


def _offenders(pattern: re.Pattern[str]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted(ROOT.rglob("*.py"))
        if not any(path == owner or owner in path.parents for owner in OWNERS)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]


def test_no_statement_on_the_delivery_tables_outside_the_store() -> None:
    assert not _offenders(STATEMENT), "\n".join(_offenders(STATEMENT))


def test_no_orm_use_of_the_delivery_tables_outside_the_store() -> None:
    assert not _offenders(ORM), "\n".join(_offenders(ORM))


def test_the_checks_find_what_they_look_for() -> None:
    # Without this, a pattern that matched nothing would pass the two tests above for ever.
    store_text = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "delivery" / "store").glob("*.py"))
    for table in TABLES.split("|"):
        assert re.search(rf"\b(FROM|JOIN|UPDATE|INTO)\s+{table}\b", store_text), table
    assert ORM.search((ROOT / "notifications" / "models.py").read_text(encoding="utf-8"))
