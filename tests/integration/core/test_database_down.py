"""With PostgreSQL unreachable, a call is UNAVAILABLE with RetryInfo (reason DATABASE_UNAVAILABLE) — retryable, as
a client needs to know — not INTERNAL."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from clarion import app
from clarion.core.cache import MemoryCache
from clarion.core.config import load_settings
from clarion.core.db import FastPath, create_engine, session_factory
from clarion.core.server import GrpcServer
from clarion.templates.isolation import TemplateProcesses
from clarion.v1 import users_pb2, users_pb2_grpc
from tests.conftest import free_port
from tests.helpers import status_detail
from tests.integration.users.test_user_service import rpc_error

pytestmark = pytest.mark.integration


async def test_an_unreachable_database_is_unavailable_not_internal() -> None:
    port = free_port()
    settings = load_settings(grpc_port=port, shutdown_grace_s=0, auth_required=False)
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    engine = create_engine(nowhere, settings=settings)
    clients = app.service_clients(settings, own_address=f"127.0.0.1:{port}")
    fast = FastPath(nowhere, max_size=2)
    processes = TemplateProcesses(workers=1)
    resources = app.Resources(settings, engine, session_factory(engine), MemoryCache(), clients, None, fast, processes)
    server = GrpcServer(settings, [app.SERVICES["users"](resources)], auth=None)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            code, status = await rpc_error(
                users_pb2_grpc.UserServiceStub(channel).GetUser(users_pb2.GetUserRequest(user_id="ada"), timeout=10)
            )
    finally:
        await server.server.stop(0)
        await resources.close()

    assert code == grpc.StatusCode.UNAVAILABLE
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "DATABASE_UNAVAILABLE"
    assert status_detail(status, error_details_pb2.RetryInfo).retry_delay.seconds == 1
