"""compose.yaml and .env.example agree with each other and with Clarion's settings: every variable the example
names is a setting, its values validate, and its URLs reach the services compose starts, on loopback only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from clarion.core.config import ENV_PREFIX, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())
    return loaded


def example() -> dict[str, str]:
    """Every `NAME=value` of .env.example, commented out or not."""
    found: dict[str, str] = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_every_service_is_pinned_healthchecked_and_on_loopback(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "rabbitmq", "redis"}
    for name, service in compose["services"].items():
        assert re.fullmatch(r"[a-z]+:\d+\.\d+(\.\d+)?(-[a-z]+)?", service["image"]), f"{name}: pin an exact version"
        assert service["healthcheck"]["test"], name
        for port in service["ports"]:
            assert port.startswith("127.0.0.1:"), f"{name}: {port} would listen on every interface"
    for mount in compose["services"]["postgres"]["volumes"]:
        source = mount.split(":")[0]
        if source.startswith("./"):
            assert (REPO / source).is_file(), source


def test_the_example_names_only_settings_and_its_values_validate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    variables = {name: value for name, value in example().items() if name.startswith(ENV_PREFIX)}
    assert set(variables) - settings == set(), "not a setting (a typo, or a setting that was renamed)"
    # Every line uncommented, as someone would: the file loads and means what it says.
    file = tmp_path / "example.env"
    file.write_text("".join(f"{name}={value}\n" for name, value in variables.items() if value))
    for name in variables:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLARION_ENV_FILE", str(file))
    loaded = load_settings()
    assert loaded.smtp_starttls is False
    assert loaded.grpc_port == int(variables["CLARION_GRPC_PORT"])


def test_the_example_urls_reach_the_compose_services(compose: dict[str, Any]) -> None:
    published = {
        name: {int(port.split(":")[2]) for port in service["ports"]} for name, service in compose["services"].items()
    }
    variables = example()
    database = urlsplit(variables["CLARION_DATABASE_URL"])
    postgres = compose["services"]["postgres"]["environment"]
    assert (database.hostname, database.port, database.username) == ("127.0.0.1", 5432, postgres["POSTGRES_USER"])
    assert database.path == f"/{postgres['POSTGRES_DB']}"
    assert database.port in published["postgres"]
    assert urlsplit(variables["CLARION_BROKER_URL"]).port in published["rabbitmq"]
    assert urlsplit(variables["CLARION_REDIS_URL"]).port in published["redis"]
