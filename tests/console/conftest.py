"""The operator console in a real browser: Debian's Chromium driven by Playwright, against `clarion up`.

Nothing here downloads a browser: Playwright launches /usr/bin/chromium (CLARION_CHROMIUM overrides it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.clients.conftest import ClarionUp, clarion_up, running_clarion_up  # noqa: F401 - clarion_up: a fixture, by name
from tests.conftest import unavailable
from tests.integration.delivery.fake_http import FakeHttpServer
from tests.integration.delivery.fake_sendgrid import FakeSendGrid

try:
    from playwright.sync_api import Browser, Page, Playwright, sync_playwright
    from playwright.sync_api import expect as expect  # re-exported: the tests import it from here

    PLAYWRIGHT_MISSING = ""
except ImportError as error:  # the tests skip (or fail under CLARION_REQUIRE_SERVICES) with this, below
    PLAYWRIGHT_MISSING = f"{error} (pip install playwright; the browser is Debian's chromium)"

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CLARION_CHROMIUM", "/usr/bin/chromium"))
# Long enough for a busy machine; Playwright's expect() and locators wait up to this, never a fixed sleep.
TIMEOUT_MS = 15_000
SENDGRID_KEY = "SG.console-test-key"
if not PLAYWRIGHT_MISSING:
    expect.set_options(timeout=TIMEOUT_MS)
T = TypeVar("T")


class Rest:
    """JSON over the REST edge with a key, as the tests' own client (urllib: nothing to install)."""

    def __init__(self, base_url: str, key: str) -> None:
        self.base_url = base_url
        self.key = key

    def call(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(  # noqa: S310 - loopback, our own URL
            self.base_url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"authorization": f"Bearer {self.key}", "content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310 - loopback, our own URL
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{method} {path}: {error.code} {error.read()[:500]!r}") from None

    def seed(self, *, email: str, template_key: str, **template: Any) -> tuple[str, str]:
        """A user and a template, and a notification of it sent to the user: (user_id, notification_id)."""
        user_id = f"console-{uuid.uuid4().hex[:10]}"
        self.call("POST", f"/v1/users?user_id={user_id}", {"email_address": email, "display_name": "Ada"})
        self.call(
            "POST",
            "/v1/templates",
            {
                "template_key": template_key,
                "subject": "Hello {name}",
                "body": "Your code is {code}.",
                "html_body": "<p>Your code is <b>{code}</b>.</p>",
                **template,
            },
        )
        return user_id, self.send(user_id, template_key)

    def send(self, user_id: str, template_key: str) -> str:
        sent = self.call(
            "POST",
            "/v1/notifications",
            {"user_id": user_id, "template_key": template_key, "message_data": {"name": "Ada", "code": "4711"}},
        )
        return str(sent["notification"]["notification_id"])


def eventually(check: Callable[[], T | None], *, what: str, timeout_s: float = 30) -> T:
    """Polls a REST check until it gives a value (for state the browser does not show until reloaded)."""
    deadline = time.monotonic() + timeout_s
    while (value := check()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return value


@dataclass(frozen=True)
class Bouncing:
    """A second `clarion up` whose email provider is SendGrid, faked on loopback: each reply scripted with
    `sendgrid.then(...)` answers one email (a 400 makes a dead letter), the others are accepted."""

    up: ClarionUp
    sendgrid: FakeSendGrid


# Module-scoped, not session-scoped: Playwright's sync API runs an event loop in this thread while it is started,
# and every asyncio test the same worker runs after the console's would find that loop running and fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if PLAYWRIGHT_MISSING:
        unavailable("playwright", PLAYWRIGHT_MISSING)
    if not CHROMIUM.is_file():
        unavailable("Chromium", f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        yield _launch(playwright)


def _launch(playwright: Playwright) -> Browser:
    # --no-sandbox: the tests run as root in CI, where Chromium's own sandbox refuses to start.
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage) at 1280x800 in light mode; fails the test on any script error or
    Content-Security-Policy violation the console causes."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    tab.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    yield tab
    context.close()
    # A 4xx the console asked for on purpose (a bad template, a refused key) is logged by Chromium as an error too.
    unexpected = [p for p in problems if "the server responded with a status of 4" not in p]
    assert not unexpected, unexpected


@pytest.fixture
def shot(tmp_path: Path) -> Callable[[Page, str], Path]:
    """Saves the page's screenshot as docs/images/console-<name>.png when CLARION_CONSOLE_SCREENSHOTS=1 (how the
    docs' pictures are made), else under the test's tmp_path."""
    folder = ROOT / "docs" / "images" if os.environ.get("CLARION_CONSOLE_SCREENSHOTS") == "1" else tmp_path

    def take(tab: Page, name: str) -> Path:
        path = folder / f"console-{name}.png"
        tab.screenshot(path=str(path))
        return path

    return take


@pytest.fixture(scope="session")
def bouncing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bouncing]:
    """`clarion up` with SendGrid on loopback: the only way to a permanent delivery failure, since the file
    provider of plain `clarion up` writes every valid address."""
    directory = tmp_path_factory.mktemp("clarion-up-sendgrid")
    with FakeHttpServer() as server:
        sendgrid = FakeSendGrid(server, api_key=SENDGRID_KEY)
        environment = {
            "CLARION_EMAIL_PROVIDER": "sendgrid",
            "CLARION_SENDGRID_API_KEY": SENDGRID_KEY,
            "CLARION_SENDGRID_HOST": sendgrid.host,
        }
        with running_clarion_up(directory, environment) as up:
            yield Bouncing(up=up, sendgrid=sendgrid)


def clarion_command() -> str:
    """The `clarion` command of this environment."""
    clarion = shutil.which("clarion", path=str(Path(sys.executable).parent))
    assert clarion, "the clarion command is not installed in this environment"
    return clarion


def read_key(up: ClarionUp, name: str) -> str:
    """A new key with only the `read` scope, made with `clarion keys create` as an operator would."""
    created = subprocess.run(
        [clarion_command(), "keys", "create", "--name", name, "--scope", "read", "--data-dir", str(up.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return created.stdout.strip()
