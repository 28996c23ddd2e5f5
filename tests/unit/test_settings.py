"""Settings: embedded defaults, one clear error per bad value, no placeholder secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmschat.errors import ConfigError
from cmschat.settings import Environment, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CMSCHAT_* from the machine, and no .env from the working directory."""
    import os

    for name in list(os.environ):
        if name.startswith("CMSCHAT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_embedded_defaults_need_no_configuration(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.environment is Environment.production
    assert settings.database_url == "sqlite+aiosqlite:///var/cmschat.db"
    assert settings.storage_url == (tmp_path / "var" / "files").as_uri()
    assert settings.redis_url is None
    assert settings.auth.bcrypt_rounds == 12


def test_values_come_from_variables_and_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "CMSCHAT_LOG_LEVEL=warning\nCMSCHAT_AUTH__TOKEN_IDLE_MINUTES=15\n"
    )
    monkeypatch.setenv("CMSCHAT_CORS_ORIGINS", "https://a.example.com, https://b.example.com/")
    settings = load_settings()
    assert settings.log_level == "WARNING"
    assert settings.auth.token_idle_minutes == 15
    assert settings.cors_origins == ["https://a.example.com", "https://b.example.com"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CMSCHAT_DATABASE_URL", "postgres://localhost/db"),
        ("CMSCHAT_LOG_LEVEL", "LOUD"),
        ("CMSCHAT_ENVIRONMENT", "staging"),
        ("CMSCHAT_CORS_ORIGINS", "*"),
        ("CMSCHAT_CORS_ORIGINS", "chat.example.com"),
        ("CMSCHAT_AUTH__BCRYPT_ROUNDS", "eleven"),
        ("CMSCHAT_AUTH__MAX_FAILURES_PER_ACCOUNT", "0"),
        ("CMSCHAT_SHUTDOWN_GRACE_SECONDS", "-5"),
    ],
)
def test_a_bad_value_is_one_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(name + ":")
    assert "\n" not in message


@pytest.mark.parametrize("secret", ["changeme", "secret", "CHANGE_ME", "too-short-for-a-key"])
def test_placeholder_secrets_are_refused_outside_development(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("CMSCHAT_SECRET_KEY", secret)
    with pytest.raises(ConfigError, match="CMSCHAT_SECRET_KEY"):
        load_settings()
    monkeypatch.setenv("CMSCHAT_ENVIRONMENT", "development")
    assert load_settings().secret_key is not None


def test_secret_value_never_shows_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "k" * 48
    monkeypatch.setenv("CMSCHAT_SECRET_KEY", key)
    settings = load_settings()
    assert key not in repr(settings) and key not in str(settings.model_dump())


def test_cheap_bcrypt_only_in_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMSCHAT_AUTH__BCRYPT_ROUNDS", "4")
    with pytest.raises(ConfigError, match="bcrypt_rounds"):
        load_settings()
    monkeypatch.setenv("CMSCHAT_ENVIRONMENT", "test")
    assert load_settings().auth.bcrypt_rounds == 4


def test_embedded_secret_key_is_generated_once_and_private(tmp_path: Path) -> None:
    settings = load_settings()
    first = settings.resolved_secret_key()
    assert first == load_settings().resolved_secret_key()
    assert len(first) >= 48
    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o077 == 0


def test_shared_databases_need_a_configured_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMSCHAT_DATABASE_URL", "mysql+asyncmy://u:p@db/cmschat")
    with pytest.raises(ConfigError, match="CMSCHAT_SECRET_KEY"):
        load_settings().resolved_secret_key()


def test_the_longest_message_must_fit_in_a_request_body(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMSCHAT_CHAT__MAX_MESSAGE_LENGTH", "20000")
    with pytest.raises(ConfigError, match="set it to at least 121024") as caught:
        load_settings()
    assert "\n" not in str(caught.value)
    monkeypatch.setenv("CMSCHAT_MAX_BODY_BYTES", "121024")
    assert load_settings().chat.max_message_length == 20000


def test_secrets_come_from_files_named_after_their_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets = tmp_path / "run-secrets"
    secrets.mkdir()
    key, token = "k" * 48, "t" * 40
    (secrets / "CMSCHAT_SECRET_KEY").write_text(key + "\n")  # as `echo` writes it
    (secrets / "cmschat_metrics__token").write_text(token)  # nested, any case
    (secrets / "CMSCHAT_DATABASE_URL").write_text("mysql+asyncmy://chat:pw@db/chat\n")
    monkeypatch.setenv("CMSCHAT_SECRETS_DIR", str(secrets))
    settings = load_settings()
    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == key
    assert settings.metrics.token is not None
    assert settings.metrics.token.get_secret_value() == token
    assert settings.database_url == "mysql+asyncmy://chat:pw@db/chat"

    # A variable set in the environment wins over its file.
    monkeypatch.setenv("CMSCHAT_SECRET_KEY", "e" * 48)
    overridden = load_settings().secret_key
    assert overridden is not None
    assert overridden.get_secret_value() == "e" * 48


@pytest.mark.parametrize("what", ["absent", "a file"])
def test_a_secrets_dir_that_is_not_a_directory_is_one_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, what: str
) -> None:
    named = tmp_path / "secrets"
    if what == "a file":
        named.write_text("CMSCHAT_SECRET_KEY=x\n")
    monkeypatch.setenv("CMSCHAT_SECRETS_DIR", str(named))
    with pytest.raises(ConfigError, match=r"^CMSCHAT_SECRETS_DIR: .*directory"):
        load_settings()
