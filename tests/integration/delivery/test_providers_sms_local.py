"""FileSmsProvider (local mode's outbox of JSON files) and SimulatedSmsProvider (logs only)."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from clarion.delivery.providers.base import PermanentFailure, SmsMessage, TransientFailure
from clarion.delivery.providers.sms_local import FileSmsProvider, SimulatedSmsProvider

pytestmark = pytest.mark.integration

RECIPIENT = "+14155550123"
DELIVERY_ID = "0b9e7c1e-5d2f-4c3a-9f7e-1a2b3c4d5e6f"


def sms(body: str = "Your code is 123456", delivery_id: str = DELIVERY_ID) -> SmsMessage:
    return SmsMessage(delivery_id=delivery_id, to=RECIPIENT, body=body)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def no_network(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("the provider touched the network")


async def test_each_text_is_a_json_file_with_every_field(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"  # created on first use

    message_id = await FileSmsProvider(outbox_dir=outbox).send(sms(body="Grüße 📦"))

    assert message_id == f"file-{DELIVERY_ID}"
    path = outbox / "sms" / f"{DELIVERY_ID}.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record.keys() == {"delivery_id", "to", "body", "segments", "encoding", "sent_at"}
    assert record["delivery_id"] == DELIVERY_ID
    assert record["to"] == RECIPIENT
    assert record["body"] == "Grüße 📦"
    assert (record["segments"], record["encoding"]) == (1, "UCS-2")
    assert datetime.fromisoformat(record["sent_at"]).utcoffset() is not None
    # Texts hold phone numbers: only the owner may read them.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700


async def test_a_retry_rewrites_the_same_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    provider = FileSmsProvider(outbox_dir=tmp_path)

    first = await provider.send(sms(body="First"))
    second = await provider.send(sms(body="a" * 161))

    assert first == second
    assert files_in(tmp_path / "sms") == [f"{DELIVERY_ID}.json"]
    record = json.loads((tmp_path / "sms" / f"{DELIVERY_ID}.json").read_text())
    assert (record["body"], record["segments"], record["encoding"]) == ("a" * 161, 2, "GSM-7")


async def test_the_file_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The final name only ever appears through os.replace of a finished temporary file in the same folder."""
    replaced: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def spy(source: str, target: str) -> None:
        assert json.loads(Path(source).read_text())["body"] == "Hello"  # complete before it takes the name
        replaced.append((Path(source), Path(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", spy)

    await FileSmsProvider(outbox_dir=tmp_path).send(sms(body="Hello"))

    [(source, target)] = replaced
    assert target == tmp_path / "sms" / f"{DELIVERY_ID}.json"
    assert source.parent == target.parent
    assert not source.exists()


@pytest.mark.parametrize("delivery_id", ["../escape", "a/b", "", ".hidden", "x" * 65])
async def test_a_delivery_id_that_is_not_a_safe_file_name_is_refused(tmp_path: Path, delivery_id: str) -> None:
    with pytest.raises(PermanentFailure):
        await FileSmsProvider(outbox_dir=tmp_path / "outbox").send(sms(delivery_id=delivery_id))

    assert files_in(tmp_path) == []


async def test_an_unwritable_outbox_is_transient_without_the_number(tmp_path: Path) -> None:
    blocker = tmp_path / "outbox"
    blocker.write_text("a file where the folder should be")

    with pytest.raises(TransientFailure) as caught:
        await FileSmsProvider(outbox_dir=blocker).send(sms())

    assert "cannot write the outbox" in str(caught.value)
    assert RECIPIENT not in str(caught.value)


async def test_the_file_provider_logs_without_the_number(tmp_path: Path, log_output: io.StringIO) -> None:
    await FileSmsProvider(outbox_dir=tmp_path).send(sms())

    lines = [line for line in log_output.getvalue().splitlines() if "sms_written" in line]
    assert len(lines) == 1
    assert DELIVERY_ID in lines[0]
    assert "4155550123" not in log_output.getvalue()


async def test_simulated_returns_an_id_logs_no_number_and_never_touches_the_network(
    monkeypatch: pytest.MonkeyPatch, log_output: io.StringIO
) -> None:
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    provider = SimulatedSmsProvider()

    first = await provider.send(sms())
    second = await provider.send(sms())
    await provider.close()

    assert provider.name == "simulated"
    assert re.fullmatch(r"sim-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", first)
    assert first != second
    output = log_output.getvalue()
    [line, _] = [json.loads(line) for line in output.splitlines() if "sms_simulated" in line]
    assert line["delivery_id"] == DELIVERY_ID
    assert line["number_ends_with"] == "23"
    assert "550123" not in output  # at most the last 2 digits
    assert "Your code is" not in output  # nor the text, which may be a one-time code
