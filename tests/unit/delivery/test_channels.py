"""The channel registry: every channel of the contracts has one module, each with its queue, content block and task
part, and each planning its payload from what it needs of the user."""

from __future__ import annotations

import pytest

from clarion.delivery.channels import BY_PROTO, CHANNELS, Skip
from clarion.delivery.queues import TOPOLOGY
from clarion.v1 import common_pb2, delivery_task_pb2, templates_pb2, users_pb2

RENDERED = templates_pb2.RenderTemplateResponse(
    locale="en",
    email=templates_pb2.RenderedEmail(subject="Hi", body="text", html_body="<p>html</p>"),
    push=templates_pb2.RenderedPush(title="T", body="B", data={"k": "v"}),
    sms=templates_pb2.RenderedSms(body="Your code is 1234", segments=1, encoding="GSM-7"),
    in_app=templates_pb2.RenderedInApp(
        title="New order", body="Order 7 shipped", action_url="https://x/7", data={"o": "7"}
    ),
)


def a_user(**fields: object) -> users_pb2.User:
    user = users_pb2.User(
        user_id="u1",
        email_address="u1@example.com",
        phone_number="+14155550123",
        preferences=users_pb2.Preferences(email_enabled=True, push_enabled=True),
        devices=[users_pb2.Device(device_id="d1", token="tok", platform=users_pb2.DEVICE_PLATFORM_ANDROID)],
    )
    for name, value in fields.items():
        if name == "preferences":
            user.preferences.CopyFrom(value)
        elif name == "devices":
            del user.devices[:]
        else:
            setattr(user, name, value)
    return user


def test_every_channel_of_the_contracts_has_one_module_and_each_module_one_queue() -> None:
    contracted = {v for v in common_pb2.Channel.values() if v != common_pb2.CHANNEL_UNSPECIFIED}
    assert set(BY_PROTO) == contracted
    assert [c.queue for c in CHANNELS.values()] == list(TOPOLOGY.work_queues)
    for name, channel in CHANNELS.items():
        assert channel.name == name
        assert common_pb2.Channel.Name(channel.proto) == f"CHANNEL_{name.upper()}"
        assert channel.content in templates_pb2.RenderTemplateResponse.DESCRIPTOR.fields_by_name


@pytest.mark.parametrize("name", list(CHANNELS))
def test_a_channel_fills_its_own_part_of_the_task(name: str) -> None:
    channel = CHANNELS[name]
    payload = channel.payload(a_user(), RENDERED)
    assert not isinstance(payload, Skip)
    task = delivery_task_pb2.DeliveryTask(delivery_id="x")
    channel.fill_task(task, payload)
    assert task.WhichOneof("content") == name


def test_email_needs_the_switch_on_and_an_address() -> None:
    email = CHANNELS["email"]
    assert email.payload(a_user(), RENDERED) == {
        "to": "u1@example.com",
        "subject": "Hi",
        "body": "text",
        "html_body": "<p>html</p>",
    }
    off = users_pb2.Preferences(email_enabled=False, push_enabled=True)
    assert email.payload(a_user(preferences=off), RENDERED) == Skip("email_disabled_by_user")
    assert email.payload(a_user(email_address=""), RENDERED) == Skip("no_email_address")


def test_push_needs_the_switch_on_and_a_device() -> None:
    push = CHANNELS["push"]
    assert push.payload(a_user(), RENDERED) == {
        "devices": [{"device_id": "d1", "token": "tok", "platform": "android"}],
        "title": "T",
        "body": "B",
        "data": {"k": "v"},
    }
    off = users_pb2.Preferences(email_enabled=True, push_enabled=False)
    assert push.payload(a_user(preferences=off), RENDERED) == Skip("push_disabled_by_user")
    assert push.payload(a_user(devices=[]), RENDERED) == Skip("no_devices")


def test_a_channel_knows_whether_a_template_has_its_content() -> None:
    email_only = templates_pb2.RenderTemplateResponse(email=templates_pb2.RenderedEmail(subject="s"))
    assert [c.has_content(email_only) for c in CHANNELS.values()] == [True, False, False, False]
    assert CHANNELS["push"].partially_sent({"sent_device_ids": ["d1"]})
    assert not CHANNELS["email"].partially_sent({"sent_device_ids": ["d1"]})


def test_sms_needs_the_switch_on_a_number_and_a_text_that_fits() -> None:
    sms = CHANNELS["sms"]
    assert sms.payload(a_user(), RENDERED) == {"to": "+14155550123", "body": "Your code is 1234"}
    # Unset means yes: a user stored before the switch existed takes texts.
    assert sms.refuses(a_user()) is None
    off = users_pb2.Preferences(sms_enabled=False)
    assert sms.payload(a_user(preferences=off), RENDERED) == Skip("sms_disabled_by_user")
    assert sms.payload(a_user(phone_number=""), RENDERED) == Skip("no_phone_number")
    blank = templates_pb2.RenderTemplateResponse(sms=templates_pb2.RenderedSms(body="  "))
    assert sms.payload(a_user(), blank) == Skip("sms_empty")
    # Ten segments of 153 GSM-7 characters fit; one more character does not.
    fits = templates_pb2.RenderTemplateResponse(sms=templates_pb2.RenderedSms(body="a" * 1530))
    assert sms.payload(a_user(), fits) == {"to": "+14155550123", "body": "a" * 1530}
    too_long = templates_pb2.RenderTemplateResponse(sms=templates_pb2.RenderedSms(body="a" * 1531))
    assert sms.payload(a_user(), too_long) == Skip("sms_too_long")
    rendered = sms.rendered({"to": "+14155550123", "body": "olá 👋"})
    assert isinstance(rendered, templates_pb2.RenderedSms)
    assert (rendered.body, rendered.segments, rendered.encoding) == ("olá 👋", 1, "UCS-2")


def test_in_app_needs_only_the_switch_on() -> None:
    in_app = CHANNELS["in_app"]
    expected = {"title": "New order", "body": "Order 7 shipped", "action_url": "https://x/7", "data": {"o": "7"}}
    assert in_app.payload(a_user(email_address="", phone_number="", devices=[]), RENDERED) == expected
    off = users_pb2.Preferences(in_app_enabled=False)
    assert in_app.payload(a_user(preferences=off), RENDERED) == Skip("in_app_disabled_by_user")
    assert in_app.rendered(expected) == RENDERED.in_app
