"""The OpenAPI document against the live edge (`clarion up`): Envoy serves gen/openapi.json without a key, and
schemathesis, which knows the API only by that document, calls every operation with generated requests: no answer
is a 5xx, and every answer (errors included) matches the document."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path

import pytest

from clarion.gateway.openapi import OPENAPI_PATH
from tests.clients.conftest import ClarionUp
from tests.conftest import unavailable

# The first test to ask for `clarion_up` pays for starting it; schemathesis then takes up to 100 s of its own.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

GEN_OPENAPI = Path(__file__).resolve().parents[2] / "gen" / "openapi.json"
SCHEMATHESIS = Path(sys.executable).parent / "st"
# Examples per operation and phase: every operation is reached (coverage, fuzzing, stateful phases) in well under a
# minute on two busy cores.
MAX_EXAMPLES = 20
SEED = 20261208


def test_the_edge_serves_the_committed_document_without_a_key(clarion_up: ClarionUp) -> None:
    host, port = clarion_up.http_address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", OPENAPI_PATH)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()

    assert response.status == 200, body[:500]
    assert response.getheader("content-type") == "application/json"
    # Served compact (it sits inside Envoy's config); the same document.
    assert json.loads(body) == json.loads(GEN_OPENAPI.read_text(encoding="utf-8"))


def test_every_operation_answers_as_the_document_says(clarion_up: ClarionUp, tmp_path: Path) -> None:
    if not SCHEMATHESIS.is_file():
        unavailable("schemathesis", f"{SCHEMATHESIS} not found: install the dev extra")
    command = [
        str(SCHEMATHESIS),
        "--no-color",
        "run",
        str(GEN_OPENAPI),
        "--url",
        clarion_up.rest_url,
        "--header",
        f"authorization: Bearer {clarion_up.api_key}",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--request-timeout",
        "15",
        # Nothing kept between runs (and nothing written into the checkout): the seed alone decides the examples.
        "--generation-database",
        "none",
    ]
    # cwd: schemathesis writes its own state (.schemathesis/) into the working directory.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=100, check=False)

    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5_000:]
