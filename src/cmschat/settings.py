"""Configuration: one Settings object, read from ``CMSCHAT_*`` variables and ``.env``.

Nothing reads the environment at import time; ``load_settings()`` is called by the CLI
and the result is passed into ``create_app(settings)``.

One module past 300 lines on purpose: every variable an operator can set is here, one
model per subsystem, so that ``.env.example`` and the README table are generated from and
checked against a single place.
"""

from __future__ import annotations

import os
import secrets
from datetime import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from cmschat.errors import ConfigError

# Values people paste from examples. Refused as secrets outside development.
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "change_me",
        "secret",
        "password",
        "example",
        "test",
        "dev",
        "development",
        "please-change",
        "replace-me",
        "xxx",
        "todo",
    }
)
MIN_SECRET_LENGTH = 32
MAX_RETENTION_DAYS = 36_500


class Environment(StrEnum):
    """Where cmschat runs; development and test relax a few safety checks."""

    production = "production"
    development = "development"
    test = "test"


class LogFormat(StrEnum):
    """JSON lines (ECS field names) for collection, or readable text for a terminal."""

    json = "json"
    console = "console"
    auto = "auto"


class DatabaseSettings(BaseModel):
    """The connection pool each process (each worker of ``serve``) keeps to MariaDB."""

    pool_size: int = Field(default=10, ge=1, le=1000)
    """Connections a process keeps open once load has opened them."""
    pool_overflow: int = Field(default=20, ge=0, le=1000)
    """Extra connections a process opens under a burst, closed again when returned."""
    pool_timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds a request waits for a free connection before it is refused (503
    ``database_pool_exhausted``)."""
    connect_timeout: float = Field(default=5.0, gt=0, le=300)
    """MariaDB: seconds a new connection may take to open before the request is refused
    (503 ``database_unavailable``)."""
    dead_link_timeout: float = Field(default=10.0, ge=1, le=3600)
    """MariaDB: seconds a connection's peer may stay silent (data unacknowledged, keepalive
    probes unanswered) before the connection is given up and the request refused (503
    ``database_unavailable``). Without it, a node cut off from its database (no reset
    ever comes) holds requests until TCP gives up, for many minutes. A long statement is
    not cut short: the server's kernel answers for it while it works."""
    replica_wait_ms: float = Field(default=0, ge=0, le=1000)
    """With read replicas: how long a read waits for a replica to apply the commits it
    needs before it goes to the primary instead (0: it goes at once)."""

    @property
    def per_process(self) -> int:
        """The most connections one process may hold at once."""
        return self.pool_size + self.pool_overflow


class AuthSettings(BaseModel):
    """Passwords, tokens and login throttling."""

    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    token_idle_minutes: int = Field(default=24 * 60, ge=1)
    token_absolute_hours: int = Field(default=7 * 24, ge=1)
    # Failed logins allowed per window: per account from clients it does not know, per
    # client address, and per trusted device (see accounts/signin.py and docs/security.md).
    max_failures_per_account: int = Field(default=5, ge=1)
    max_failures_per_address: int = Field(default=20, ge=1)
    max_failures_per_device: int = Field(default=5, ge=1)
    failure_window_seconds: int = Field(default=15 * 60, ge=1)
    device_token_days: int = Field(default=180, ge=1)
    """How long a device token (proof of an earlier login from a client) stays valid."""


class ChatSettings(BaseModel):
    """Messages and rooms."""

    max_message_length: int = Field(default=4000, ge=1, le=100_000)
    send_rate: float = Field(default=5, ge=0, le=1000)
    """Messages per second per user, over HTTP and WebSocket together; 0 turns it off."""
    send_burst: int = Field(default=20, ge=1, le=10_000)
    """Messages a user may send at once before ``send_rate`` applies."""
    sends_in_flight: int = Field(default=256, ge=1, le=100_000)
    """Sends one process works on at once (HTTP and WebSocket); past it a send is refused
    at once (HTTP 503 + ``Retry-After``, WebSocket ``busy``) instead of queueing. The
    default is one full group-commit batch: at most one batch waits behind the one being
    written."""
    busy_retry_after_seconds: int = Field(default=1, ge=1, le=60)
    """What a refused send is told to wait before trying again."""
    cache_seconds: float = Field(default=5, ge=0, le=60)
    """How long a process keeps a membership or a user's name at most (chat/caches.py).
    Changes drop them at once through their events; this bounds what a missed event
    leaves (docs/security.md). 0 turns the caches off."""
    cache_entries: int = Field(default=50_000, ge=0, le=10_000_000)
    """Memberships (and, apart, users) a process keeps at most; least recently used go."""


class RealtimeSettings(BaseModel):
    """The WebSocket gateway."""

    auth_timeout_seconds: float = Field(default=10, gt=0)
    idle_timeout_seconds: float = Field(default=120, gt=0)
    """Close a connection that sent nothing (not even a ping) for this long."""
    max_frame_bytes: int = Field(default=65_536, ge=1024)
    frames_in_flight: int = Field(default=32, ge=1, le=10_000)
    """Frames of one connection queued or being acted on; past it a frame is answered
    ``busy`` (with ``retry_after``), never by closing the socket."""
    send_queue_size: int = Field(default=1000, ge=10)
    """Events waiting for one client; past this it is too slow and is closed (1013)."""
    write_timeout_seconds: float = Field(default=10, gt=0, le=600)
    """A client whose socket takes no data for this long is too slow and is closed (1013)."""
    gap_wait_ms: float = Field(default=300, ge=0, le=5000)
    """A room event that arrives before the ones under it (another instance's, still on its
    way through Redis) waits this long for them before they are read from the database."""
    typing_interval_seconds: float = Field(default=2, ge=0)
    session_check_seconds: float = Field(default=30, gt=0, le=3600)
    """Re-check open connections' tokens this often (the backstop for lost revocations)."""
    presence_ttl_seconds: float = Field(default=30, ge=1, le=3600)
    """With Redis: how long an instance's claim that a user is online lasts unrenewed
    (renewed every third of it). A user whose instance dies is announced offline within
    this plus a third of it."""


class AttachmentSettings(BaseModel):
    """Uploads: limits, types and clean-up."""

    max_file_mib: int = Field(default=100, ge=1, le=10_240)
    quota_mib: int = Field(default=2048, ge=1)
    """Per user: the sum of their stored uploads."""
    allowed_extensions: Annotated[list[str], NoDecode] | None = None
    """None: the built-in allow-list of documents, images, audio, video and archives."""
    unlinked_minutes: int = Field(default=60, ge=1)
    """Uploads not sent with a message within this long are removed."""
    cleanup_interval_seconds: int = Field(default=300, ge=5)

    @field_validator("allowed_extensions", mode="before")
    @classmethod
    def _split_extensions(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().lower().lstrip(".") for part in value.split(",") if part.strip()]
        return value


class RetentionSettings(BaseModel):
    """How long data is kept, and when the daily purge runs.

    ``message_days``/``attachment_days`` are the global defaults until an admin sets them
    in the console (``/api/v1/admin/retention``); unset means keep forever.
    """

    message_days: int | None = Field(default=None, ge=1, le=MAX_RETENTION_DAYS)
    attachment_days: int | None = Field(default=None, ge=1, le=MAX_RETENTION_DAYS)
    audit_days: int = Field(default=400, ge=30, le=MAX_RETENTION_DAYS)
    """Audit events are kept longer than chat data; at least 30 days."""
    login_attempt_days: int = Field(default=90, ge=1, le=MAX_RETENTION_DAYS)
    """Sign-in attempts (who, from which address) are personal data: kept this long."""
    run_daily: bool = True
    """Purge once a day, in-process; several instances elect one leader per run."""
    run_at: time = time(3, 30)
    """When the daily purge starts (UTC, HH:MM)."""
    batch_size: int = Field(default=500, ge=1, le=10_000)
    """Rows per transaction: short transactions keep a busy database responsive."""
    batch_pause_ms: int = Field(default=50, ge=0, le=10_000)
    """Pause between batches, so other writers get the database (SQLite has one writer)."""
    check_seconds: int = Field(default=60, ge=1, le=3600)
    """How often each process checks whether the purge is due (or its leader gone)."""
    lease_seconds: int = Field(default=600, ge=5, le=86_400)
    """The leader renews its lease between batches; one that died (killed, its host lost)
    frees the purge for another process this long after its last renewal."""


class MetricsSettings(BaseModel):
    """``/metrics`` and query timing."""

    token: SecretStr | None = None
    """Bearer token Prometheus must send; without one, sensitive series are left out."""
    slow_query_ms: int = Field(default=500, ge=1)
    """Statements slower than this are counted and logged with their fingerprint."""
    trace_sql_ms: float = Field(default=1.0, ge=0)
    """While tracing: statements at least this long get a span of their own; quicker ones
    are counted on the request's span (``db.statements``). 0 = a span for every one."""


class MonitoringSettings(BaseModel):
    """The console's own monitoring: per-minute samples and Alertmanager's firing alerts."""

    alertmanager_url: str = Field(default="", pattern=r"^(https?://\S+)?$")
    """Base URL of Alertmanager (``http://127.0.0.1:9093``); empty: alerts not shown."""
    alertmanager_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    """The console waits at most this long for Alertmanager, then says "unreachable"."""
    sample_keep_hours: int = Field(default=48, ge=1, le=24 * 31)
    """Per-minute samples older than this are pruned (the console shows at most 48 h)."""


class BackupSettings(BaseModel):
    """Encrypted backups: where they go, who can read them, how long they stay, when they run."""

    url: str = ""
    """file:///ABSOLUTE/PATH or s3://BUCKET/PREFIX; unset: ``backups/`` in the data dir."""
    recipients: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """age public keys (age1…); unset on SQLite: a key generated into the data dir."""
    identity_file: Path | None = None
    """The age private key, read only by verify, restore and drill."""
    keep_days: int = Field(default=14, ge=1, le=MAX_RETENTION_DAYS)
    schedule: bool = True
    """Run full and incremental backups and drills in-process (leader only)."""
    full_at: time = time(3, 0)
    """When the daily full backup starts, in ``timezone``."""
    incremental_minutes: int = Field(default=60, ge=0, le=24 * 60)
    """Incremental backups (MariaDB with binary logging) this often; 0 turns them off."""
    drill_weekday: int = Field(default=6, ge=0, le=6)
    """Day of the weekly restore drill (0 Monday … 6 Sunday), at ``drill_at``."""
    drill_at: time = time(5, 0)
    timezone: str = "Asia/Seoul"
    rto_target_seconds: int = Field(default=2 * 3600, ge=1)
    rpo_target_seconds: int = Field(default=24 * 3600, ge=1)
    nice: int = Field(default=19, ge=0, le=19)
    """CPU niceness of the child process a server runs backups and drills in (19: lowest)."""
    mariadb_method: Literal["dump", "mariadb-backup"] = "dump"
    """MariaDB full backups: ``dump`` (mariadb-dump, local or remote) or ``mariadb-backup``
    (a physical copy; the database must run on this host, with binary logging on)."""

    @field_validator("recipients", mode="before")
    @classmethod
    def _split_recipients(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("recipients")
    @classmethod
    def _check_recipients(cls, value: list[str]) -> list[str]:
        for recipient in value:
            if not recipient.startswith("age1"):
                # Never echo the value: a private key pasted here must not reach a log.
                raise ValueError("each recipient is an age public key starting with age1")
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value and not value.startswith(("file:///", "s3://")):
            raise ValueError("use file:///absolute/path or s3://bucket/prefix")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone name like Asia/Seoul") from None
        return value


class Settings(BaseSettings):
    """Every setting of cmschat; see README "Configuration" for each variable."""

    model_config = SettingsConfigDict(
        env_prefix="CMSCHAT_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="ignore",
        # Files named after the variables (CMSCHAT_SECRETS_DIR, load_settings): the nested
        # ones like CMSCHAT_METRICS__TOKEN too. A directory named but absent is an error.
        secrets_nested_delimiter="__",
        secrets_dir_missing="error",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The usual order; secret files read by the source that knows nested names."""
        secrets = NestedSecretsSettingsSource(file_secret_settings)
        return init_settings, env_settings, dotenv_settings, secrets

    environment: Environment = Environment.production
    data_dir: Path = Path("var")
    database_url: str = ""
    database_replica_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """MariaDB replicas of ``database_url`` (comma-separated URLs): history pages,
    searches and WebSocket replays read from one that has applied every commit made before
    the read began, else from the primary (db/replicas.py)."""
    redis_url: str | None = None
    redis_prefix: str = Field(default="cmschat", pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    """Names this deployment's Redis channel and keys, so several may share one Redis."""
    redis_cluster: bool = False
    """``redis_url`` names a node of a Redis Cluster (7 or later): room events travel on
    shard channels, and each instance hears only the shards its connections need."""
    redis_shards: int = Field(default=1024, ge=1, le=16384)
    """With ``redis_cluster``: how many shard channels the rooms are spread over (an
    instance subscribes at most this many; more shards, less traffic it does not need)."""
    storage_url: str = ""
    # For s3:// storage; unset credentials fall back to boto3's usual chain (AWS_* variables,
    # instance roles).
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    web_dir: Path | None = None
    """The static web client and console; unset: the copy shipped with cmschat. A
    directory that does not exist turns the web client off (API only)."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=64 << 20)
    """Largest request body outside uploads (which have their own limit); 413 above it."""
    hsts_max_age: int = Field(default=31_536_000, ge=0, le=2 * 31_536_000)
    """Strict-Transport-Security on HTTPS requests (direct, or from a trusted proxy); 0: off."""
    hsts_include_subdomains: bool = True
    """Subdomains of the chat host are covered too (ASVS level 2); off only if one lacks TLS."""
    shutdown_grace_seconds: int = Field(default=30, ge=1, le=3600)
    http_keep_alive_seconds: int = Field(default=75, ge=1, le=3600)
    """How long an idle HTTP connection stays open for its client's next request. Longer
    than a proxy in front keeps idle connections to cmschat (nginx's upstream
    ``keepalive_timeout``, 60 s in deploy/nginx; a cloud load balancer's idle timeout, often
    60 s): a proxy never sends a request on a connection that cmschat is closing, which it
    would answer 502."""
    gil_switch_interval_ms: float = Field(default=5.0, ge=0.1, le=100, allow_inf_nan=False)
    """How long a thread holding the GIL may run Python before one waiting for it gets a
    turn (``sys.setswitchinterval``), in every process of ``cmschat serve``. The default is
    Python's own: SQLite's thread waits up to this long after each statement while the
    event loop runs Python (docs/operations.md)."""
    workers: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = "auto"
    """Worker processes of ``cmschat serve`` on one port; auto: one per core the process may
    use (``cpu_cores``) on MariaDB with Redis, one on the embedded SQLite default (``serve
    --workers`` overrides it)."""
    min_free_disk_mib: int = Field(default=256, ge=0, le=1 << 30)
    """``/readyz`` answers 503 while the data directory's disk has less free space (0: off),
    so a load balancer stops sending writes before the disk is full."""
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.auto
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings)
    attachments: AttachmentSettings = Field(default_factory=AttachmentSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)

    @field_validator("cors_origins", "trusted_proxies", "database_replica_urls", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r} is not an origin like https://chat.example.com")
            if origin == "*":
                raise ValueError("'*' is not allowed; list the origins of your web client")
        return [origin.rstrip("/") for origin in value]

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if value and not value.startswith(("sqlite+aiosqlite://", "mysql+asyncmy://")):
            raise ValueError("use sqlite+aiosqlite:///PATH or mysql+asyncmy://USER:PASS@HOST/DB")
        return value

    @field_validator("database_replica_urls")
    @classmethod
    def _check_replica_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith("mysql+asyncmy://"):
                raise ValueError("replicas are MariaDB: mysql+asyncmy://USER:PASS@HOST/DB")
        return value

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str) -> str:
        if value and not value.startswith(("file:///", "s3://")):
            raise ValueError("use file:///absolute/path or s3://bucket/prefix")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{(self.data_dir / 'cmschat.db').as_posix()}"
        if not self.storage_url:
            self.storage_url = (self.data_dir / "files").resolve().as_uri()
        if not self.backup.url:
            self.backup.url = (self.data_dir / "backups").resolve().as_uri()

        if self.database_replica_urls and self.is_sqlite:
            raise ValueError(
                "CMSCHAT_DATABASE_REPLICA_URLS: read replicas need a MariaDB primary "
                "(CMSCHAT_DATABASE_URL=mysql+asyncmy://...)"
            )
        if self.redis_cluster and not self.redis_url:
            raise ValueError(
                "CMSCHAT_REDIS_CLUSTER: set CMSCHAT_REDIS_URL to a node of the cluster "
                "(redis://HOST:PORT)"
            )
        if self.auth.bcrypt_rounds < 12 and self.environment is not Environment.test:
            raise ValueError(
                "CMSCHAT_AUTH__BCRYPT_ROUNDS: bcrypt_rounds below 12 is only allowed when "
                "CMSCHAT_ENVIRONMENT=test"
            )
        if self.secret_key is not None and not self.is_development:
            raw = self.secret_key.get_secret_value()
            if raw.strip().lower() in PLACEHOLDER_SECRETS or len(raw) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"CMSCHAT_SECRET_KEY is a placeholder or shorter than {MIN_SECRET_LENGTH} "
                    "characters; generate one with: python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))'"
                )
        # A message of the longest allowed length must fit in a request body: a character
        # can take 6 bytes in JSON (a \uXXXX escape), plus the JSON around it.
        needed = self.chat.max_message_length * 6 + 1024
        if self.max_body_bytes < needed:
            raise ValueError(
                f"CMSCHAT_MAX_BODY_BYTES={self.max_body_bytes} is too small for messages of "
                f"CMSCHAT_CHAT__MAX_MESSAGE_LENGTH={self.chat.max_message_length} characters: "
                f"set it to at least {needed}"
            )
        token = self.metrics.token
        if token is not None and not self.is_development:
            raw = token.get_secret_value()
            if raw.strip().lower() in PLACEHOLDER_SECRETS or len(raw) < MIN_SECRET_LENGTH:
                raise ValueError(
                    "CMSCHAT_METRICS__TOKEN is a placeholder or shorter than "
                    f"{MIN_SECRET_LENGTH} characters"
                )
        return self

    @property
    def is_development(self) -> bool:
        """True in development and test, where a few safety checks are relaxed."""
        return self.environment is not Environment.production

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded default database."""
        return self.database_url.startswith("sqlite")

    def resolved_secret_key(self) -> bytes:
        """The key for HMACs of stored tokens.

        The embedded default keeps a generated key in ``data_dir`` so a single machine
        works with no configuration; several instances on a shared database must share a
        configured key, so there it is required.
        """
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        if not self.is_sqlite:
            raise ConfigError("CMSCHAT_SECRET_KEY: required when the database is not SQLite")
        key_file = self.data_dir / "secret_key"
        if not key_file.exists():
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            key_file.touch(mode=0o600, exist_ok=True)
            key_file.write_text(secrets.token_urlsafe(48))
        return key_file.read_text().strip().encode()


SECRETS_DIR = "CMSCHAT_SECRETS_DIR"
"""A directory of files, each named after a variable and holding its value (Docker and
Kubernetes secrets, systemd's ``$CREDENTIALS_DIRECTORY``), so that no secret need be in the
environment, where ``/proc/<pid>/environ`` and ``docker inspect`` show it. Read from the
environment only; a variable set there wins over its file."""


def load_settings(**overrides: Any) -> Settings:
    """Read settings, turning a bad value into one ConfigError naming the variable."""
    secrets_dir = os.environ.get(SECRETS_DIR) or None
    try:
        return Settings(_secrets_dir=secrets_dir, **overrides)
    except SettingsError as exc:  # the secrets directory: absent, not a directory
        raise ConfigError(f"{SECRETS_DIR}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        location = "__".join(str(part) for part in first["loc"]) if first["loc"] else ""
        name = f"CMSCHAT_{location.upper()}" if location else "configuration"
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{name}: {message}") from None
