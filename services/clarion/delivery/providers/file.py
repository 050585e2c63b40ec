"""Local mode's email provider: each email becomes `<outbox>/<delivery_id>.eml`, readable by any mail client.

Idempotent by delivery id: a retry rewrites the same file. Written atomically (a temporary file renamed into
place), so a reader never sees half an email, and readable by the owner only, since emails hold personal data.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from email.headerregistry import Address
from pathlib import Path

from clarion.core.logging import get_logger
from clarion.delivery.providers.base import EmailMessage, PermanentFailure, TransientFailure, redact_error
from clarion.delivery.providers.mime import build_mime, parse_mailbox

log = get_logger(__name__)


class FileProvider:
    """Writes emails to a folder instead of sending them; returns the file's path as the message id."""

    name = "file"

    def __init__(self, *, outbox_dir: Path, sender: Address) -> None:
        self._outbox_dir = outbox_dir
        self._sender = sender

    async def send(self, message: EmailMessage) -> str:
        """Write the email; the same delivery id always lands in the same file."""
        try:
            recipient = parse_mailbox(message.to, what="recipient")
        except ValueError as exc:
            raise PermanentFailure(str(exc)) from None
        data = build_mime(message, sender=self._sender, recipient=recipient).as_bytes()
        path = self._outbox_dir / f"{message.delivery_id}.eml"  # build_mime has checked the id is a safe name
        try:
            await asyncio.to_thread(_write_atomically, path, data)
        except OSError as exc:
            text = redact_error(f"cannot write the outbox: {type(exc).__name__}: {exc.strerror}")
            raise TransientFailure(text) from exc
        log.info("email_written", delivery_id=message.delivery_id, path=str(path), size_bytes=len(data))
        return str(path)

    async def close(self) -> None:
        """Nothing is held between emails."""


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkstemp creates the file with mode 0600.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
