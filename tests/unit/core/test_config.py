from pathlib import Path

import pytest

from clarion import cli
from clarion.core.config import SettingsError, load_settings


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLARION_GRPC_PORT", raising=False)
    settings = load_settings()
    assert settings.grpc_port == 50051
    assert settings.grpc_host == "127.0.0.1"
    assert settings.database_url is None
    assert settings.data_dir == Path(".clarion")


def test_reads_clarion_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_GRPC_PORT", "6000")
    monkeypatch.setenv("CLARION_DATABASE_URL", "postgresql://u:p@db:5432/clarion")
    monkeypatch.setenv("CLARION_LOG_LEVEL", "debug")
    settings = load_settings()
    assert (settings.grpc_port, settings.database_url, settings.log_level) == (
        6000,
        "postgresql://u:p@db:5432/clarion",
        "debug",
    )


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("CLARION_GRPC_PORT", "not-a-port", "valid integer"),
        ("CLARION_GRPC_PORT", "70000", "less than or equal to 65535"),
        ("CLARION_DATABASE_URL", "mysql://root@localhost/db", "PostgreSQL URL"),
        ("CLARION_LOG_LEVEL", "loud", "'debug', 'info', 'warning' or 'error'"),
        ("CLARION_SHUTDOWN_GRACE_S", "-1", "greater than or equal to 0"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, complaint: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert variable in message
    assert complaint in message


def test_every_bad_variable_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_GRPC_PORT", "x")
    monkeypatch.setenv("CLARION_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "CLARION_GRPC_PORT" in str(caught.value)
    assert "CLARION_LOG_FORMAT" in str(caught.value)


def test_cli_fails_fast_on_bad_settings(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CLARION_GRPC_PORT", "abc")
    assert cli.main(["migrate"]) == 2
    assert "CLARION_GRPC_PORT='abc'" in capsys.readouterr().err


def test_cli_migrate_without_database_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CLARION_DATABASE_URL", raising=False)
    assert cli.main(["migrate"]) == 2
    assert "CLARION_DATABASE_URL is not set" in capsys.readouterr().err


def test_a_dotenv_file_is_read_and_the_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# local settings\nCLARION_GRPC_PORT=6100\nCLARION_LOG_LEVEL=debug\nOTHER=1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLARION_ENV_FILE", ".env")
    monkeypatch.delenv("CLARION_GRPC_PORT", raising=False)
    monkeypatch.setenv("CLARION_LOG_LEVEL", "warning")

    settings = load_settings()

    assert settings.grpc_port == 6100
    assert settings.log_level == "warning"


def test_the_settings_file_can_be_named_or_turned_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "staging.env").write_text("CLARION_GRPC_PORT=6200\n")
    (tmp_path / ".env").write_text("CLARION_GRPC_PORT=6300\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLARION_GRPC_PORT", raising=False)

    monkeypatch.setenv("CLARION_ENV_FILE", str(tmp_path / "staging.env"))
    assert load_settings().grpc_port == 6200
    monkeypatch.setenv("CLARION_ENV_FILE", "")
    assert load_settings().grpc_port == 50051


def test_a_bad_value_in_the_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CLARION_GRPC_PORT=eighty\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLARION_ENV_FILE", ".env")
    monkeypatch.delenv("CLARION_GRPC_PORT", raising=False)

    with pytest.raises(SettingsError, match="CLARION_GRPC_PORT='eighty'"):
        load_settings()


def test_the_email_provider_list_is_normalized_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_EMAIL_PROVIDERS", " SendGrid , smtp ")
    assert load_settings().email_providers == "sendgrid,smtp"
    monkeypatch.setenv("CLARION_EMAIL_PROVIDERS", "sendgrid,mailgun")
    with pytest.raises(SettingsError, match=r"CLARION_EMAIL_PROVIDERS=.*mailgun"):
        load_settings()
    monkeypatch.setenv("CLARION_EMAIL_PROVIDERS", "smtp,smtp")
    with pytest.raises(SettingsError, match="once"):
        load_settings()
