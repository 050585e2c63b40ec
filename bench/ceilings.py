"""The machine's ceilings, measured in the same run as the system: what a bare grpc.aio server, a bare aio-pika
confirm → consume → ack pipe and bare asyncpg inserts manage here, so Clarion's figures read as shares of them."""

from __future__ import annotations

import asyncio
import time
import uuid

import aio_pika
import asyncpg
import grpc

ECHO_METHOD = "/bench.Echo/Echo"


async def grpc_echo_rps(*, duration_s: float, in_flight: int = 64) -> float:
    """Unary RPCs per second against a grpc.aio server whose one method returns its request (64 in flight)."""

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler = grpc.method_handlers_generic_handler("bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ECHO_METHOD)
            done = 0
            deadline = time.perf_counter() + duration_s

            async def client() -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    await call(b"x" * 200, timeout=10)
                    done += 1

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(in_flight)))
            return done / (time.perf_counter() - started)
    finally:
        await server.stop(0)


async def rabbitmq_pipe_mps(url: str, *, duration_s: float, size: int = 1024, batch: int = 64) -> float:
    """Persistent 1 KiB messages per second through RabbitMQ: published with confirms (`batch` outstanding),
    consumed and acked on another connection, to a quorum queue like Clarion's."""
    queue_name = f"bench-pipe-{uuid.uuid4().hex[:8]}"
    publisher = await aio_pika.connect(url)
    consumer = await aio_pika.connect(url)
    try:
        publish_channel = await publisher.channel(publisher_confirms=True)
        consume_channel = await consumer.channel()
        await consume_channel.set_qos(prefetch_count=256)
        queue = await consume_channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        received = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1

        tag = await queue.consume(on_message)
        body = b"x" * size
        deadline = time.perf_counter() + duration_s
        started = time.perf_counter()
        sent = 0
        while time.perf_counter() < deadline:
            await asyncio.gather(
                *(
                    publish_channel.default_exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue_name
                    )
                    for _ in range(batch)
                )
            )
            sent += batch
        while received < sent and time.perf_counter() < deadline + 10:  # noqa: ASYNC110 - polls a counter: an Event per message would cost the pipe
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
        return received / elapsed
    finally:
        await publisher.close()
        await consumer.close()


async def postgres_insert_rps(dsn: str, *, duration_s: float, connections: int = 8) -> float:
    """Rows per second, one INSERT per transaction (autocommit), `connections` at once, into a table like
    Clarion's notifications (uuid key, a few columns, an index)."""
    table = f"bench_insert_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(
            f"CREATE TABLE {table} (id uuid PRIMARY KEY, user_id text, payload jsonb, created_at timestamptz)"
        )
        await admin.execute(f"CREATE INDEX ON {table} (user_id, created_at)")
        pool = await asyncpg.create_pool(dsn, min_size=connections, max_size=connections)
        assert pool is not None
        done = 0
        deadline = time.perf_counter() + duration_s

        async def writer() -> None:
            nonlocal done
            async with pool.acquire() as connection:
                while time.perf_counter() < deadline:
                    await connection.execute(
                        f"INSERT INTO {table} VALUES ($1, $2, $3, now())",
                        uuid.uuid4(),
                        "user-1",
                        '{"n": 1}',
                    )
                    done += 1

        started = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(connections)))
        elapsed = time.perf_counter() - started
        await pool.close()
        return done / elapsed
    finally:
        await admin.execute(f"DROP TABLE IF EXISTS {table}")
        await admin.close()
