"""Every RPC of the contracts, fuzzed with hypothesis against `clarion serve all` as a real process on real
PostgreSQL: whatever a caller sends, the answer is a status the caller can act on — never INTERNAL or UNKNOWN (a bug
of ours), never a hang past the deadline.

CLARION_FUZZ_EXAMPLES (default 500) sets the cases per RPC; they are the same on every run unless
CLARION_FUZZ_RANDOM=1 asks for new ones (do that when hunting, before a release). A failure prints the smallest
request that breaks it; the server's log is in the test's temporary folder (`server.log`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import HealthCheck, given, settings

from clarion.core.db import upgrade_database
from clarion.v1 import (
    notifications_pb2,
    notifications_pb2_grpc,
    templates_pb2,
    templates_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from tests.conftest import _admin, _with_database, free_port
from tests.e2e.conftest import wait_until_serving
from tests.fuzz.strategies import messages
from tests.integration.conftest import TEST_PEPPER

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("CLARION_FUZZ_EXAMPLES", "500"))
# The same cases on every run (CI must not pass or fail by chance); CLARION_FUZZ_RANDOM=1 explores new ones.
DERANDOMIZE = not os.environ.get("CLARION_FUZZ_RANDOM")
DEADLINE_S = 10.0
# A bug of ours, or a server that stopped answering: what no request may cause.
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
BIN = Path(sys.executable).parent
METHODS: list[MethodDescriptor] = [
    method
    for module in (users_pb2, templates_pb2, notifications_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


@dataclass(frozen=True)
class Target:
    """The server under fuzz, its admin key, and the seeded values worth guessing."""

    address: str
    api_key: str
    known: tuple[str, ...]


def _seed(address: str, api_key: str) -> tuple[str, ...]:
    """A user with a device, a template with email and push content, a notification: ids the fuzzer may hit."""
    metadata = (("authorization", f"Bearer {api_key}"),)
    with grpc.insecure_channel(address) as channel:
        users = users_pb2_grpc.UserServiceStub(channel)
        templates = templates_pb2_grpc.TemplateServiceStub(channel)
        notifications = notifications_pb2_grpc.NotificationServiceStub(channel)
        user = users.CreateUser(
            users_pb2.CreateUserRequest(
                user_id="fuzz-user", user={"email_address": "fuzz@example.com", "timezone": "Europe/Lisbon"}
            ),
            metadata=metadata,
            timeout=10,
        )
        device = users.AddDevice(
            users_pb2.AddDeviceRequest(user_id=user.user_id, device={"token": "fuzz-token", "platform": 1}),
            metadata=metadata,
            timeout=10,
        )
        templates.CreateTemplate(
            templates_pb2.CreateTemplateRequest(
                template={
                    "template_key": "WEEKLY_DIGEST",
                    "subject": "Your {app_name} digest",
                    "body": "{new_updates} new: {digest_link}",
                    "push_title": "{app_name}",
                    "push_body": "{new_updates} new",
                }
            ),
            metadata=metadata,
            timeout=10,
        )
        request = notifications_pb2.SendNotificationRequest(user_id=user.user_id, template_key="WEEKLY_DIGEST")
        request.message_data.update({"app_name": "Fuzz", "new_updates": "3", "digest_link": "https://example.com"})
        notification = notifications.SendNotification(request, metadata=metadata, timeout=10).notification
    return (user.user_id, device.device_id, "WEEKLY_DIGEST", notification.notification_id, "fuzz-token")


@pytest.fixture(scope="module")
def target(postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """`clarion serve all` on a database of its own for the whole module, seeded, with an admin key."""
    name = f"clarion_fuzz_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    database_url = _with_database(postgres_server_url, name)
    upgrade_database(database_url)
    folder = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(
        {
            "CLARION_DATABASE_URL": database_url,
            "CLARION_GRPC_PORT": str(port),
            "CLARION_METRICS_PORT": "0",
            "CLARION_API_KEY_PEPPER": TEST_PEPPER,
            # The fuzzer is one key calling as fast as it can: no quota.
            "CLARION_API_KEY_RATE_PER_S": "0",
            "CLARION_LOG_LEVEL": "warning",
        }
    )
    key = subprocess.run(
        [str(BIN / "clarion"), "keys", "create", "--name", "fuzz", "--scope", "admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [str(BIN / "clarion"), "serve", "all"], env=env, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    try:
        address = f"127.0.0.1:{port}"
        wait_until_serving(address, server)
        yield Target(address, key, _seed(address, key))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    assert server.returncode == 0, f"the server did not stop cleanly; see {folder / 'server.log'}"


@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
def test_no_request_gets_internal_unknown_or_a_hang(target: Target, method: MethodDescriptor) -> None:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    metadata = (("authorization", f"Bearer {target.api_key}"),)
    seen: dict[str, int] = {}

    with grpc.insecure_channel(target.address) as channel:
        call: grpc.UnaryUnaryMultiCallable[Any, Any] = channel.unary_unary(
            f"/{method.containing_service.full_name}/{method.name}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_class.FromString,
        )

        @settings(
            max_examples=EXAMPLES,
            derandomize=DERANDOMIZE,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(request=messages(method.input_type, target.known))
        def fuzz(request: Any) -> None:
            assert isinstance(request, request_class)
            code, details = grpc.StatusCode.OK, ""
            try:
                call(request, metadata=metadata, timeout=DEADLINE_S)
            except grpc.RpcError as error:
                code, details = error.code(), error.details() or ""
            assert code not in FORBIDDEN, f"{code.name}: {details}"
            # An error that echoes the input must still fit in the trailers the client accepts.
            assert "metadata size" not in details, details
            seen[code.name] = seen.get(code.name, 0) + 1

        fuzz()

    # What the cases got, for the log of the run: a suite that only ever saw INVALID_ARGUMENT went nowhere deep.
    print(f"{method.name}: {dict(sorted(seen.items()))}")  # noqa: T201 - the run's report, shown with -s or -rA
