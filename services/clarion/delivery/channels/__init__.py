"""The channel registry: every channel Clarion delivers on, by name (clarion.delivery.channels.base says what a
channel is). The order is the order in which a notification's deliveries are planned."""

from __future__ import annotations

from collections.abc import Mapping

from clarion.delivery.channels.base import Channel, Sending, Sent, Skip
from clarion.delivery.channels.email import EmailChannel
from clarion.delivery.channels.in_app import InAppChannel
from clarion.delivery.channels.push import PushChannel
from clarion.delivery.channels.sms import SmsChannel

CHANNELS: Mapping[str, Channel] = {
    channel.name: channel for channel in (EmailChannel(), PushChannel(), SmsChannel(), InAppChannel())
}
# clarion.v1.Channel values to names and back.
BY_PROTO: Mapping[int, Channel] = {channel.proto: channel for channel in CHANNELS.values()}

__all__ = ["BY_PROTO", "CHANNELS", "Channel", "Sending", "Sent", "Skip"]
