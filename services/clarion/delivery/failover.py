"""A channel's providers in order of preference, each behind its own circuit breaker: a message goes to the first
provider whose breaker admits it, so while SendGrid's is open email goes out through SMTP, and returns to SendGrid
once its trial call succeeds. When no breaker admits, the worker parks the message without spending an attempt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clarion.delivery.breaker import ProviderBreaker


class Providers:
    """`routes`: (provider, its breaker), the preferred first; provider names are distinct."""

    def __init__(self, routes: Sequence[tuple[Any, ProviderBreaker]]) -> None:
        names = [str(provider.name) for provider, _ in routes]
        if len(set(names)) != len(names):
            raise ValueError(f"a provider may appear once in a channel's list: {names}")
        self._routes = list(routes)
        self._breakers = dict(zip(names, (breaker for _, breaker in routes), strict=True))

    def __bool__(self) -> bool:
        return bool(self._routes)

    @property
    def names(self) -> list[str]:
        return list(self._breakers)

    def choose(self) -> Any | None:
        """The first provider whose breaker admits a call now (the call then counts as made: see
        ProviderBreaker.admits), or None when none does."""
        return next((provider for provider, breaker in self._routes if breaker.admits()), None)

    def wait_s(self) -> float:
        """When none is admitted: how long until the soonest may be."""
        return min((breaker.wait_s() for _, breaker in self._routes), default=0.0)

    def breaker(self, name: str) -> ProviderBreaker | None:
        return self._breakers.get(name)

    def release(self, provider: Any) -> None:
        """`provider` was chosen but not called after all: free its breaker's trial slot (ProviderBreaker.release)."""
        breaker = self._breakers.get(str(provider.name))
        if breaker is not None:
            breaker.release()
