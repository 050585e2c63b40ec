"""Envoy in front of the services, from the gateway tests' fixtures: providers post through the real edge."""

from tests.integration.gateway.conftest import start_gateway  # noqa: F401 - a fixture, by name
