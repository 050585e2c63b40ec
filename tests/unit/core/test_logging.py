import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from clarion.core.logging import configure_logging, get_logger, redact_text


@pytest.fixture
def json_logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def test_redacts_personal_data_and_secrets_in_text() -> None:
    text = "mail ada@example.com call +14155550123 key clr_ab12_s3cr3t auth Bearer abc.def"
    redacted = redact_text(text)
    for secret in ("ada@example.com", "+14155550123", "clr_ab12_s3cr3t", "abc.def"):
        assert secret not in redacted


def test_log_lines_are_json_with_context_and_no_personal_data(json_logs: Callable[[], list[dict[str, Any]]]) -> None:
    structlog.contextvars.bind_contextvars(request_id="req-7")
    try:
        get_logger("test").info("user_created", email_address="ada@example.com", token="fcm-token", note="hi")
    finally:
        structlog.contextvars.clear_contextvars()
    [line] = json_logs()
    assert line["event"] == "user_created"
    assert line["request_id"] == "req-7"
    assert line["level"] == "info"
    assert line["email_address"] == "[redacted]"
    assert line["token"] == "[redacted]"
    assert line["note"] == "hi"


def test_standard_library_logs_are_json_too(json_logs: Callable[[], list[dict[str, Any]]]) -> None:
    logging.getLogger("alembic.runtime").info("Running upgrade for bob@example.com")
    [line] = json_logs()
    assert line["logger"] == "alembic.runtime"
    assert "bob@example.com" not in line["event"]


def test_a_logged_stack_trace_shows_no_local_variables(json_logs: Callable[[], list[dict[str, Any]]]) -> None:
    def handler(request: str) -> None:
        raise ValueError("boom")

    try:
        handler("email_address: ada@example.com")
    except ValueError:
        get_logger("test").exception("rpc_unhandled_error")
    [line] = json_logs()
    assert line["exception"][0]["exc_type"] == "ValueError"
    assert [frame["name"] for frame in line["exception"][0]["frames"]][-1] == "handler"
    assert "ada@example.com" not in json.dumps(line), "a frame's locals would carry the request into the log"


def test_a_logged_exception_is_redacted_too(json_logs: Callable[[], list[dict[str, Any]]]) -> None:
    try:
        raise ValueError("Key (email)=(ada@example.com) already exists; key clr_ab12_s3cr3t")
    except ValueError:
        get_logger("test").exception("rpc_unhandled_error")
    [line] = json_logs()
    text = json.dumps(line)
    assert "ValueError" in text
    assert "ada@example.com" not in text
    assert "s3cr3t" not in text


def test_a_very_long_value_is_cut_before_it_is_searched() -> None:
    text = "x " * 20_000 + "ada@example.com"
    redacted = redact_text(text)
    assert len(redacted) < 17_000
    assert redacted.endswith("characters cut]")
    # A cut through the middle of an address drops the whole word, not just the part the pattern would miss.
    cut = "y" * 16_375 + " ada@example.com" + "z" * 10
    assert "ada@" not in redact_text(cut)
