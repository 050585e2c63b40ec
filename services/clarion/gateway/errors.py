"""The one error of the edge: it cannot be configured, or Envoy cannot start or stopped on its own."""

from __future__ import annotations


class GatewayError(RuntimeError):
    """The message says what went wrong and, where it can, what to do."""
