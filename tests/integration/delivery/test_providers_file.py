"""FileProvider: local mode's outbox of `.eml` files."""

from __future__ import annotations

import email
import email.policy
import io
import stat
from email.message import EmailMessage as MimeMessage
from pathlib import Path

import pytest

from clarion.delivery.providers.base import PermanentFailure
from clarion.delivery.providers.file import FileProvider
from clarion.delivery.providers.mime import parse_mailbox
from tests.integration.delivery.conftest import RECIPIENT, SENDER, email_message

pytestmark = pytest.mark.integration


def provider(outbox: Path) -> FileProvider:
    return FileProvider(outbox_dir=outbox, sender=parse_mailbox(SENDER, what="sender"))


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def read_eml(path: Path) -> MimeMessage:
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(parsed, MimeMessage)
    return parsed


async def test_each_email_is_a_parseable_eml_file_with_both_parts(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"  # created on first use
    message = email_message()

    message_id = await provider(outbox).send(message)

    path = outbox / f"{message.delivery_id}.eml"
    assert message_id == str(path)
    mime = read_eml(path)
    assert mime["From"] == SENDER
    assert mime["To"] == RECIPIENT
    assert mime["Subject"] == message.subject
    assert mime["Message-ID"] == f"<{message.delivery_id}@example.com>"
    plain, html = mime.get_body(("plain",)), mime.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert plain.get_content().replace("\r\n", "\n").rstrip("\n") == message.body
    assert html.get_content().replace("\r\n", "\n").rstrip("\n") == message.html_body
    # Emails hold personal data: only the owner may read them.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700


async def test_a_retry_rewrites_the_same_file(tmp_path: Path) -> None:
    first, second = email_message(subject="First"), email_message(subject="Second")

    await provider(tmp_path).send(first)
    await provider(tmp_path).send(second)

    assert files_in(tmp_path) == [f"{first.delivery_id}.eml"]  # and no temporary file left behind
    assert read_eml(tmp_path / f"{first.delivery_id}.eml")["Subject"] == "Second"


@pytest.mark.parametrize("delivery_id", ["../escape", "a/b", "", ".hidden", "x" * 65])
async def test_a_delivery_id_that_is_not_a_safe_file_name_is_refused(tmp_path: Path, delivery_id: str) -> None:
    with pytest.raises(PermanentFailure):
        await provider(tmp_path / "outbox").send(email_message(delivery_id=delivery_id))

    assert files_in(tmp_path) == []


async def test_one_log_line_without_the_address(tmp_path: Path, log_output: io.StringIO) -> None:
    message = email_message()

    await provider(tmp_path).send(message)

    lines = [line for line in log_output.getvalue().splitlines() if "email_written" in line]
    assert len(lines) == 1
    assert message.delivery_id in lines[0]
    assert RECIPIENT not in log_output.getvalue()
    assert "ada.lovelace" not in log_output.getvalue()
