"""A channel's providers in order: the first whose breaker admits takes the message; none when all are open."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from clarion.delivery.breaker import ProviderBreaker
from clarion.delivery.failover import Providers
from tests.unit.delivery.test_breaker import Clock


@dataclass(frozen=True)
class Named:
    name: str


def chain(clock: Clock) -> tuple[Providers, ProviderBreaker, ProviderBreaker]:
    first = ProviderBreaker(threshold=2, reset_s=30, clock=clock)
    second = ProviderBreaker(threshold=2, reset_s=30, clock=clock)
    return Providers([(Named("sendgrid"), first), (Named("smtp"), second)]), first, second


def test_the_first_takes_everything_until_its_breaker_opens_then_the_next() -> None:
    clock = Clock()
    providers, sendgrid, _ = chain(clock)
    assert providers.choose() == Named("sendgrid")
    sendgrid.record_failure()
    assert providers.choose() == Named("sendgrid"), "one failure is not an outage"
    sendgrid.record_failure()
    assert providers.choose() == Named("smtp")
    assert providers.choose() == Named("smtp")


def test_traffic_returns_to_the_first_once_its_trial_succeeds() -> None:
    clock = Clock()
    providers, sendgrid, _ = chain(clock)
    sendgrid.record_failure()
    sendgrid.record_failure()
    clock.now += 30
    assert providers.choose() == Named("sendgrid"), "the trial"
    assert providers.choose() == Named("smtp"), "the rest, while the trial is out"
    sendgrid.record_success()
    assert providers.choose() == Named("sendgrid")


def test_none_when_every_breaker_is_open_and_the_wait_is_the_soonest() -> None:
    clock = Clock()
    providers, sendgrid, smtp = chain(clock)
    for _ in range(2):
        sendgrid.record_failure()
    clock.now += 10
    for _ in range(2):
        smtp.record_failure()
    assert providers.choose() is None
    assert providers.wait_s() == 20, "SendGrid half-opens first"


def test_a_provider_may_appear_once() -> None:
    with pytest.raises(ValueError, match="once"):
        Providers(
            [
                (Named("smtp"), ProviderBreaker(threshold=1, reset_s=1)),
                (Named("smtp"), ProviderBreaker(threshold=1, reset_s=1)),
            ]
        )
