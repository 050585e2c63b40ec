"""`clarion up` configured by a `.env` file alone (as `.env.example` and compose.yaml suggest): on a real PostgreSQL,
RabbitMQ and Redis instead of its embedded database and in-process queue, the seed flow delivers an email."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.test_gateway_cli import rest, wait_until_rest_serves
from tests.e2e.test_workers_as_processes import _cleanup
from tests.integration.conftest import RABBITMQ_URL, TEST_REDIS_URL
from tests.integration.gateway.test_rest_users import SEED_USER

pytestmark = pytest.mark.e2e


def test_up_takes_its_settings_from_dotenv_and_delivers_on_real_services(
    clarion_process: Callable[..., subprocess.Popen[str]], make_database: Callable[..., str], tmp_path: Path
) -> None:
    database_url = make_database()  # empty: `clarion up` migrates it
    namespace, grpc_port, http_port = f"e2e-{uuid.uuid4().hex[:8]}", free_port(), free_port()
    (tmp_path / ".env").write_text(
        "# as .env.example, with the compose services uncommented\n"
        f"CLARION_DATABASE_URL={database_url}\n"
        f"CLARION_BROKER_URL={RABBITMQ_URL}\n"
        f"CLARION_BROKER_NAMESPACE={namespace}\n"
        f"CLARION_REDIS_URL={TEST_REDIS_URL}\n"
        f"CLARION_GRPC_PORT={grpc_port}\n"
        f"CLARION_HTTP_PORT={http_port}\n"
        "CLARION_EMAIL_PROVIDER=file\n"
    )
    process = clarion_process("up", env={"CLARION_ENV_FILE": ".env"})  # its working directory is tmp_path
    try:
        wait_until_rest_serves(http_port, process, deadline_s=120)
        api_key = (tmp_path / ".clarion" / "api-key").read_text().strip()
        status, user = rest(http_port, "POST", "/v1/users", SEED_USER, api_key=api_key)
        assert status == 200, user
        template = {"template_key": "DOTENV", "subject": "Hello {name}", "body": "Sent through {where}."}
        status, created = rest(http_port, "POST", "/v1/templates", template, api_key=api_key)
        assert status == 200, created
        send = {
            "user_id": user["user_id"],
            "template_key": "DOTENV",
            "message_data": {"name": "Ada", "where": "RabbitMQ"},
            "priority": "PRIORITY_CRITICAL",  # the seed user's quiet hours would hold a normal send
        }
        status, accepted = rest(http_port, "POST", "/v1/notifications", send, api_key=api_key)
        assert status == 200, accepted
        notification_id = accepted["notification"]["notification_id"]

        deadline = time.monotonic() + 60
        while True:
            status, stored = rest(http_port, "GET", f"/v1/notifications/{notification_id}", api_key=api_key)
            if stored.get("status") == "NOTIFICATION_STATUS_SENT" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert stored["status"] == "NOTIFICATION_STATUS_SENT", stored
        [email] = (tmp_path / ".clarion" / "outbox").glob("*.eml")
        assert "Sent through RabbitMQ." in email.read_text()
        # Not the embedded database: `clarion up` made no PostgreSQL of its own.
        assert not (tmp_path / ".clarion" / "postgres").exists()
    finally:
        asyncio.run(_cleanup(namespace, [process]))
