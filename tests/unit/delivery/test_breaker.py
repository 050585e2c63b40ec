from prometheus_client import REGISTRY

from clarion.core.metrics import BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN
from clarion.delivery.breaker import ProviderBreaker
from clarion.delivery.consumer import backoff_s


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_half_opens_after_the_reset() -> None:
    clock = Clock()
    breaker = ProviderBreaker(threshold=3, reset_s=10, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.open_for_s() == 0
    breaker.record_failure()
    assert breaker.open_for_s() == 10
    clock.now += 4
    assert breaker.open_for_s() == 6
    clock.now += 6
    assert breaker.open_for_s() == 0, "half-open: one call may try"
    breaker.record_failure()
    assert breaker.open_for_s() == 10, "a failure while half-open reopens at once"
    clock.now += 10
    breaker.record_success()
    breaker.record_failure()
    assert breaker.open_for_s() == 0, "a success closes it and resets the count"


def test_a_success_in_between_resets_the_count() -> None:
    breaker = ProviderBreaker(threshold=2, reset_s=5, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.open_for_s() == 0


def test_backoff_grows_is_jittered_capped_and_honours_retry_after() -> None:
    for attempt in range(1, 6):
        delay = backoff_s(attempt, None, base_s=2)
        assert 2 ** (attempt - 1) <= delay <= 2**attempt
    assert backoff_s(30, None) <= 3600
    assert backoff_s(1, 42.0) == 42.0


def test_its_state_is_exported_as_a_gauge_read_at_scrape_time() -> None:
    clock = Clock()
    breaker = ProviderBreaker(threshold=2, reset_s=10, name="unit-test-provider", clock=clock)

    def exported() -> float | None:
        return REGISTRY.get_sample_value("clarion_circuit_breaker_state", {"breaker": "provider:unit-test-provider"})

    assert exported() == BREAKER_CLOSED
    breaker.record_failure()
    breaker.record_failure()
    assert exported() == BREAKER_OPEN
    clock.now += 10
    assert exported() == BREAKER_HALF_OPEN, "no call needed: the open time is over"
    breaker.record_success()
    assert exported() == BREAKER_CLOSED


def test_half_open_admits_one_trial_until_it_answers() -> None:
    clock = Clock()
    breaker = ProviderBreaker(threshold=1, reset_s=10, clock=clock)
    assert [breaker.admits(), breaker.admits()] == [True, True], "closed: every call"
    breaker.record_failure()
    assert not breaker.admits()
    assert breaker.wait_s() == 10
    clock.now += 10
    assert breaker.admits(), "half-open: the trial"
    assert not breaker.admits(), "and no other while it is out"
    assert 0 < breaker.wait_s() <= 1
    breaker.record_failure()
    assert not breaker.admits(), "the trial failed: open again"
    clock.now += 10
    assert breaker.admits()
    breaker.record_success()
    assert [breaker.admits(), breaker.admits()] == [True, True], "the trial succeeded: closed"


def test_a_trial_that_never_answers_frees_its_slot() -> None:
    clock = Clock()
    breaker = ProviderBreaker(threshold=1, reset_s=10, clock=clock)
    breaker.record_failure()
    clock.now += 10
    assert breaker.admits()
    clock.now += 10  # its worker died mid-call
    assert breaker.admits()
    breaker.release()  # a trial admitted and not made (its delivery needed no send)
    assert breaker.admits()
