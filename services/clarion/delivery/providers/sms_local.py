"""SMS without Twilio: local mode's outbox of JSON files, and a simulated provider that only logs.

The file provider is idempotent by delivery id (a retry rewrites `<outbox>/sms/<delivery_id>.json`) and writes
atomically with file.py's helper, so a reader never sees half a message; the files are readable by the owner only,
since they hold phone numbers. The simulated provider sends nothing and logs no number: at most its last 2 digits.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from clarion.core.logging import get_logger
from clarion.delivery.providers.base import SmsMessage, TransientFailure, check_delivery_id, redact_error
from clarion.delivery.providers.file import _write_atomically
from clarion.delivery.sms_text import measure

log = get_logger(__name__)

# Inside the outbox that email's `.eml` files share, so local mode has one folder to look in.
SMS_FOLDER = "sms"


class FileSmsProvider:
    """Writes texts to `<outbox_dir>/sms/` instead of sending them; answers "file-<delivery_id>"."""

    name = "file"

    def __init__(self, *, outbox_dir: Path) -> None:
        self._outbox_dir = outbox_dir

    async def send(self, message: SmsMessage) -> str:
        """Write the text; the same delivery id always lands in the same file."""
        delivery_id = check_delivery_id(message.delivery_id)  # it names the file
        measured = measure(message.body)
        record = {
            "delivery_id": delivery_id,
            "to": message.to,
            "body": message.body,
            "segments": measured.segments,
            "encoding": measured.encoding,
            "sent_at": datetime.now(UTC).isoformat(),
        }
        data = json.dumps(record, ensure_ascii=False, indent=2).encode() + b"\n"
        path = self._outbox_dir / SMS_FOLDER / f"{delivery_id}.json"
        try:
            await asyncio.to_thread(_write, self._outbox_dir, path, data)
        except OSError as exc:
            text = redact_error(f"cannot write the outbox: {type(exc).__name__}: {exc.strerror}")
            raise TransientFailure(text) from exc
        log.info("sms_written", delivery_id=delivery_id, path=str(path), segments=measured.segments)
        return f"file-{delivery_id}"

    async def close(self) -> None:
        """Nothing is held between texts."""


class SimulatedSmsProvider:
    """Logs each text and answers "sim-<uuid>"; nothing leaves the process."""

    name = "simulated"

    async def send(self, message: SmsMessage) -> str:
        """Log the text (never its number, nor its body); it always succeeds."""
        measured = measure(message.body)
        log.info(
            "sms_simulated",
            delivery_id=message.delivery_id,
            number_ends_with=message.to[-2:] if len(message.to) > 2 else "",
            segments=measured.segments,
            encoding=measured.encoding,
        )
        return f"sim-{uuid.uuid4()}"

    async def close(self) -> None:
        """Nothing to release."""


def _write(outbox_dir: Path, path: Path, data: bytes) -> None:
    # The outbox too is the owner's only, whichever of email and SMS creates it first.
    outbox_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_atomically(path, data)
