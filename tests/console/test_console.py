"""The operator console (console/, served by Envoy at /console/) used as people use it, in Chromium."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.clients.conftest import ClarionUp
from tests.console.conftest import TIMEOUT_MS, Bouncing, Rest, eventually, expect, read_key
from tests.integration.delivery.fake_http import Reply
from tests.integration.delivery.fake_sendgrid import sendgrid_errors

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = pytest.mark.e2e

Shot = Callable[["Page", str], Path]


def nav(page: Page, name: str) -> Locator:
    """A link of the main navigation."""
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True)


def sign_in(page: Page, up: ClarionUp, key: str) -> None:
    """Opens the console at the URL `clarion up` prints and signs in with `key`."""
    page.goto(f"{up.rest_url}/console/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_newcomer_finds_the_delivery_timeline_in_two_clicks(page: Page, clarion_up: ClarionUp, shot: Shot) -> None:
    rest = Rest(clarion_up.rest_url, clarion_up.api_key)
    key = f"CONSOLE_WELCOME_{uuid.uuid4().hex[:6].upper()}"
    user_id, notification_id = rest.seed(email=f"{uuid.uuid4().hex[:8]}@example.com", template_key=key)

    page.goto(f"{clarion_up.rest_url}/console/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, "sign-in")
    page.get_by_label("API key").fill(clarion_up.api_key)
    page.get_by_role("button", name="Sign in").click()  # click 1

    # Activity is the landing page; the key is not in the URL, and stays in this tab's sessionStorage only.
    expect(page.get_by_role("heading", name="Activity", exact=True)).to_be_visible()
    assert clarion_up.api_key not in page.url
    expect(nav(page, "Activity")).to_have_attribute("aria-current", "page")
    row = page.get_by_role("row").filter(has_text=notification_id)
    expect(row).to_contain_text(user_id)
    shot(page, "activity")
    row.get_by_role("link", name=f"{key} v1").click()  # click 2

    # The timeline: the email delivery's attempt with its provider and outcome (the page follows it until sent).
    expect(page.get_by_role("heading", name=f"{key} to {user_id}")).to_be_visible()
    attempts = page.get_by_role("list", name="Attempts of the email delivery")
    expect(attempts.get_by_role("listitem")).to_have_count(1, timeout=30_000)
    expect(attempts).to_contain_text("Attempt 1")
    expect(attempts).to_contain_text("file")
    expect(attempts).to_contain_text("succeeded")
    expect(attempts).to_contain_text(re.compile(r"\d+ ms"))
    # Its content as rendered at accept (GetNotification's delivery content); HTML in a sandboxed frame.
    expect(page.get_by_text("As rendered when the notification was accepted.")).to_be_visible()
    expect(page.locator(".rendered-subject")).to_have_text("Hello Ada")
    frame = page.locator("iframe.rendered-html")
    expect(frame).to_have_attribute("sandbox", "")
    expect(page.frame_locator("iframe.rendered-html").locator("b")).to_have_text("4711")
    page.get_by_role("heading", name="Deliveries").evaluate("heading => heading.scrollIntoView()")
    shot(page, "notification")

    # Filters are part of the URL: the user's notifications only.
    nav(page, "Activity").click()
    page.get_by_label("User id").fill(user_id)
    page.get_by_label("Status").select_option("NOTIFICATION_STATUS_SENT")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(rf"#/activity\?user_id={user_id}&status=NOTIFICATION_STATUS_SENT"))
    expect(page.get_by_role("status")).to_have_text("1 notification")
    # The time window goes to the server: from tomorrow on, nothing; from a year ago, this one.
    page.get_by_label("Created from").fill((datetime.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("status")).to_have_text("No notifications match.")
    page.get_by_label("Created from").fill((datetime.now() - timedelta(days=365)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("status")).to_have_text("1 notification")


def test_a_dead_letter_is_replayed_and_its_new_attempt_shown(page: Page, bouncing: Bouncing, shot: Shot) -> None:
    rest = Rest(bouncing.up.rest_url, bouncing.up.api_key)
    bouncing.sendgrid.then(Reply(400, sendgrid_errors("The to email does not contain a valid address.")))
    user_id, notification_id = rest.seed(
        email=f"{uuid.uuid4().hex[:8]}@example.com", template_key=f"CONSOLE_BOUNCE_{uuid.uuid4().hex[:6].upper()}"
    )
    eventually(
        lambda: rest.call("GET", f"/v1/dead-letters?user_id={user_id}")["dead_letters"] or None,
        what="the dead letter",
    )

    sign_in(page, bouncing.up, bouncing.up.api_key)
    expect(page.get_by_role("heading", name="Activity", exact=True)).to_be_visible()
    nav(page, "Dead letters").click()
    row = page.get_by_role("row").filter(has_text=user_id)
    expect(row).to_contain_text("sendgrid answered 400")
    shot(page, "dead-letters")
    row.get_by_role("button", name="Replay").click()

    expect(page.get_by_role("status").filter(has_text="Replayed")).to_have_text(
        "Replayed 1 of 1: queued again with fresh attempts."
    )
    expect(row.get_by_role("button", name="Replay")).to_be_disabled()
    page.get_by_role("link", name=re.compile("^Follow delivery")).click()

    # Both attempts in the timeline: the refusal, then the replay SendGrid accepted.
    expect(page.get_by_role("heading", name=re.compile(f"to {user_id}$"))).to_be_visible()
    assert notification_id in page.url
    attempts = page.get_by_role("list", name="Attempts of the email delivery").get_by_role("listitem")
    expect(attempts).to_have_count(2, timeout=30_000)
    expect(attempts.nth(0)).to_contain_text("permanent failure")
    expect(attempts.nth(0)).to_contain_text("sendgrid answered 400")
    expect(attempts.nth(1)).to_contain_text("succeeded")


def test_a_read_key_sees_everything_and_no_action(page: Page, bouncing: Bouncing) -> None:
    rest = Rest(bouncing.up.rest_url, bouncing.up.api_key)
    bouncing.sendgrid.then(Reply(400, sendgrid_errors("The to email does not contain a valid address.")))
    template_key = f"CONSOLE_READ_{uuid.uuid4().hex[:6].upper()}"
    user_id, _ = rest.seed(email=f"{uuid.uuid4().hex[:8]}@example.com", template_key=template_key)
    eventually(
        lambda: rest.call("GET", f"/v1/dead-letters?user_id={user_id}")["dead_letters"] or None,
        what="the dead letter",
    )

    sign_in(page, bouncing.up, read_key(bouncing.up, f"console-read-{uuid.uuid4().hex[:6]}"))
    expect(page.get_by_text(re.compile(r"· read$"))).to_be_visible()
    nav(page, "Dead letters").click()
    row = page.get_by_role("row").filter(has_text=user_id)
    expect(row).to_contain_text("sendgrid answered 400")
    expect(page.get_by_text("This key may not replay dead letters.")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Replay"))).to_have_count(0)

    # Templates: readable and previewed, not editable.
    nav(page, "Templates").click()
    page.get_by_role("link", name=template_key).click()
    expect(page.get_by_text("This key may read templates but not change them.")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("^Save"))).to_have_count(0)
    expect(page.get_by_label("Email subject")).not_to_be_editable()
    expect(page.locator(".preview .rendered-subject")).to_have_text("Hello name")


def test_a_template_is_edited_with_its_preview(page: Page, clarion_up: ClarionUp, shot: Shot) -> None:
    rest = Rest(clarion_up.rest_url, clarion_up.api_key)
    key = f"CONSOLE_EDIT_{uuid.uuid4().hex[:6].upper()}"
    rest.call(
        "POST",
        "/v1/templates",
        {
            "template_key": key,
            "subject": "Hi {{ name }}",
            "body": "Line one\nYour code: {{ code }}",
            "html_body": "<h1>Hi {{ name }}</h1><p>Code <b>{{ code }}</b></p>",
            "push_title": "Code {{ code }}",
            "push_body": "For {{ name }}",
            "localizations": {
                "pt": {
                    "subject": "Olá {{ name }}",
                    "body": "Código: {{ code }}",
                    "push_title": "Código {{ code }}",
                    "push_body": "Para {{ name }}",
                }
            },
        },
    )
    sign_in(page, clarion_up, clarion_up.api_key)
    nav(page, "Templates").click()
    page.get_by_role("link", name=key).click()
    expect(page.get_by_role("heading", name=f"Template {key}")).to_be_visible()
    preview = page.locator(".preview")

    # The sample data starts from the placeholders; editing it re-renders (debounced) through RenderTemplate.
    expect(preview.locator(".rendered-subject")).to_have_text("Hi name")
    page.get_by_label("Sample data (JSON)").fill('{"name": "Grace", "code": "0042"}')
    expect(preview.locator(".rendered-subject")).to_have_text("Hi Grace")
    expect(preview.frame_locator("iframe.rendered-html").locator("b")).to_have_text("0042")
    expect(preview.get_by_role("region", name="Rendered push notification")).to_contain_text("For Grace")
    page.get_by_label("Preview locale").select_option("pt")
    expect(preview.locator(".rendered-subject")).to_have_text("Olá Grace")
    page.get_by_label("Sample data (JSON)").fill('{"name": "Grace"}')
    expect(page.get_by_text("code is used by the template")).to_be_visible()
    page.get_by_label("Sample data (JSON)").fill('{"name": "Grace", "code": "0042"}')
    page.get_by_label("Preview locale").select_option("en")
    expect(preview.locator(".rendered-subject")).to_have_text("Hi Grace")
    # The preview follows the editor before anything is saved (RenderTemplate's draft).
    page.get_by_label("Email subject").fill("Hello {{ name }}!")
    expect(preview.locator(".rendered-subject")).to_have_text("Hello Grace!")
    expect(preview).to_contain_text("Your edits (not saved)")
    assert rest.call("GET", f"/v1/templates/{key}")["version"] == 1
    shot(page, "template")

    # A template that does not compile: the error sits next to its field, and points at the line.
    page.get_by_label("Email text body").fill("Line one\nLine two {{ code ")
    page.get_by_role("button", name="Save as version 2").click()
    body_error = page.locator("#" + page.get_by_label("Email text body").get_attribute("id") + "-error")  # type: ignore[operator]
    expect(body_error).to_contain_text("does not compile (line 2)")
    expect(page.get_by_label("Email text body")).to_have_attribute("aria-invalid", "true")
    page.get_by_role("button", name=re.compile(r"body, line 2$")).click()
    expect(page.get_by_label("Email text body")).to_be_focused()

    # Fixed and saved: version 2, and the preview renders it.
    page.get_by_label("Email text body").fill("Line one\nYour code: {{ code }}")
    page.get_by_label("Email subject").fill("Welcome, {{ name }}")
    page.get_by_role("button", name="Save as version 2").click()
    expect(page.get_by_text("Saved as version 2.")).to_be_visible()
    expect(preview.locator(".rendered-subject")).to_have_text("Welcome, name")
    expect(page.get_by_role("table", name="Every version, newest first").get_by_role("row")).to_have_count(3)
    assert rest.call("GET", f"/v1/templates/{key}")["subject"] == "Welcome, {{ name }}"
    assert rest.call("GET", f"/v1/templates/{key}")["localizations"]["pt"]["subject"] == "Olá {{ name }}"


def test_users_and_stats(page: Page, clarion_up: ClarionUp, shot: Shot) -> None:
    rest = Rest(clarion_up.rest_url, clarion_up.api_key)
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    user_id, notification_id = rest.seed(email=email, template_key=f"CONSOLE_USER_{uuid.uuid4().hex[:6].upper()}")
    rest.call(
        "PATCH",
        f"/v1/users/{user_id}?update_mask=preferences",
        {"preferences": {"push_enabled": False, "quiet_hours_start": "22:00", "quiet_hours_end": "07:00"}},
    )
    rest.call(
        "POST", f"/v1/users/{user_id}/devices", {"token": "fcm-token-abcdef123456", "platform": "DEVICE_PLATFORM_WEB"}
    )
    eventually(
        lambda: (
            rest.call("GET", f"/v1/notifications/{notification_id}")["status"] == "NOTIFICATION_STATUS_SENT" or None
        ),
        what="the notification to be sent",
    )

    sign_in(page, clarion_up, clarion_up.api_key)
    nav(page, "Users").click()
    page.get_by_label("User id or email address").fill(email)
    page.get_by_role("button", name="Look up").click()
    expect(page.get_by_role("heading", name="User Ada")).to_be_visible()
    facts = page.locator("dl.summary")
    expect(facts).to_contain_text("22:00 to 07:00 (UTC)")
    expect(facts).to_contain_text(re.compile(r"Push\s*off"))
    devices = page.get_by_role("table", name="Push devices")
    expect(devices).to_contain_text("…123456")
    expect(devices).not_to_contain_text("fcm-token")  # the token's end only
    expect(page.get_by_role("table", name="The user's last 10 notifications")).to_contain_text("sent")
    shot(page, "user")

    nav(page, "Stats").click()
    expect(page.get_by_role("heading", name="Delivery stats")).to_be_visible()
    chart = page.get_by_role("img", name="Sent and failed deliveries, by channel")
    expect(chart).to_be_visible()
    expect(chart).to_contain_text(re.compile(r"sent \d+"))
    expect(page.get_by_role("img", name="Time to send, by provider")).to_contain_text("p95")
    shot(page, "stats")


def test_keyboard_and_sign_out(page: Page, clarion_up: ClarionUp) -> None:
    page.goto(f"{clarion_up.rest_url}/console/")
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Sign in")).to_be_focused()
    page.get_by_label("API key").fill("clr_nope_wrong")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("API key")
    page.get_by_label("API key").fill(clarion_up.api_key)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Activity", exact=True)).to_be_focused()
    # The key survives a reload in this tab, and signing out forgets it.
    page.reload()
    expect(page.get_by_role("heading", name="Activity", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("() => sessionStorage.length") == 0
