"""Settings: one typed object read from `CLARION_*` environment variables (and a `.env` file), validated at start."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CLARION_"


class SettingsError(Exception):
    """The environment holds a bad setting; the message names each bad variable."""


class Settings(BaseSettings):
    """Every knob Clarion has. Nothing else reads the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Where the gRPC server listens. Loopback by default; containers set 0.0.0.0.
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    grpc_max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    grpc_keepalive_time_s: float = Field(default=30.0, gt=0)
    grpc_keepalive_timeout_s: float = Field(default=10.0, gt=0)
    # How long SIGTERM waits for in-flight calls before cancelling them; keep below the pod's grace period.
    shutdown_grace_s: float = Field(default=20.0, ge=0, le=300)

    # Where local mode's Envoy serves REST and gRPC (Kubernetes renders its own gateway config).
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)

    # PostgreSQL. Unset in local mode means the embedded server under `data_dir`.
    database_url: str | None = None
    # The role the services connect as, when it is not the one migrations run as: `clarion migrate` grants it data
    # access (SELECT, INSERT, UPDATE, DELETE) to every table after migrating, and nothing of the schema.
    # Lowercase, as PostgreSQL folds an unquoted CREATE ROLE name.
    database_app_role: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    database_pool_size: int = Field(default=10, ge=1, le=200)
    database_echo: bool = False

    # Redis for the shared read-through cache of users and templates. Unset: an in-process cache, right for one
    # process (local mode); set it whenever more than one server instance runs.
    redis_url: str | None = None
    cache_ttl_s: float = Field(default=300.0, gt=0, le=86_400)

    # RabbitMQ, e.g. amqp://guest:guest@127.0.0.1:5672/. Unset: the in-process broker (local mode only, not durable).
    broker_url: str | None = None
    broker_publish_timeout_s: float = Field(default=5.0, gt=0, le=60)
    # Prefixes every exchange and queue name, so several deployments (or test runs) can share one RabbitMQ.
    broker_namespace: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]{0,64}$")

    # Where NotificationService finds the other services. Unset: this process's own gRPC port (local mode, `serve all`).
    users_address: str | None = None
    templates_address: str | None = None
    # Per-call deadline, and the circuit breaker that stops calling a service that keeps failing.
    dependency_timeout_s: float = Field(default=2.0, gt=0, le=60)
    breaker_failure_threshold: int = Field(default=5, ge=1, le=1000)
    breaker_reset_s: float = Field(default=10.0, gt=0, le=3600)

    # How long an idempotency key is remembered.
    idempotency_ttl_s: float = Field(default=24 * 3600.0, ge=60, le=30 * 24 * 3600.0)
    # The dispatcher: how many notifications one pass claims, and how often it looks when nothing wakes it.
    dispatch_batch_size: int = Field(default=100, ge=1, le=5000)
    dispatch_poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    # What the dispatcher publishes: `protobuf` (clarion.v1.DeliveryTask), or `json` (the format of releases before
    # it) while workers of such a release still run: they cannot read a DeliveryTask. Every worker reads both.
    delivery_task_format: Literal["protobuf", "json"] = "protobuf"

    # Channel workers: attempts before a delivery fails for good, how long a claim lasts before the sweeper takes
    # it back (longer than any provider call), and how many messages each worker handles at once.
    delivery_max_attempts: int = Field(default=5, ge=1, le=50)
    delivery_lease_s: float = Field(default=120.0, ge=1, le=3600)
    # Retry backoff: exponential from this base with jitter (2 s, 4 s, 8 s… through the broker's retry tiers).
    delivery_backoff_base_s: float = Field(default=2.0, gt=0, le=600)
    worker_prefetch: int = Field(default=16, ge=1, le=1000)
    sweeper_interval_s: float = Field(default=15.0, gt=0, le=3600)
    # A delivery published (or due back from a retry tier) this long ago and still neither claimed nor finished has
    # lost its message: the sweeper publishes it again. Longer than a work queue's backlog takes to drain.
    delivery_republish_after_s: float = Field(default=600.0, ge=5, le=7 * 24 * 3600.0)
    # Processes that compile and render Jinja templates, each killed when a template overruns its budget
    # (templates/isolation.py); brace templates render in the server's own process.
    template_workers: int = Field(default=2, ge=1, le=64)
    # WatchInbox streams one server process holds open at once; more are refused (RESOURCE_EXHAUSTED, retry).
    inbox_max_watchers: int = Field(default=1000, ge=1, le=100_000)
    # Per-provider circuit breaker: consecutive transient failures that open it, and how long it stays open.
    provider_breaker_threshold: int = Field(default=5, ge=1, le=1000)
    provider_breaker_reset_s: float = Field(default=30.0, gt=0, le=3600)
    # The gRPC services serve Prometheus metrics here (GET /metrics, plain HTTP on CLARION_GRPC_HOST); 0 takes a free
    # port. Worker processes serve theirs on the health port.
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    # Worker processes (no gRPC port) answer GET /healthz and GET /metrics here, on CLARION_GRPC_HOST, for Kubernetes
    # probes and Prometheus.
    health_port: int = Field(default=8081, ge=0, le=65535)
    # Drain: how long a stopping worker waits for in-flight messages before requeueing them.
    worker_drain_s: float = Field(default=20.0, ge=0, le=300)

    # --- Delivery providers (read by clarion.delivery.providers.factory; docs/operations.md) ---
    # Email: "auto" is SendGrid when an API key is set, else SMTP when a host is set, else `.eml` files in the
    # outbox (local mode). Push: FCM when a service-account file is set, else simulated (logged, nothing sent).
    email_provider: Literal["auto", "sendgrid", "smtp", "file"] = "auto"
    # Failover: the email providers in order of preference, comma-separated ("sendgrid,smtp"). While one's circuit
    # breaker is open, email goes through the next; it returns once a trial call succeeds. Empty: email_provider alone.
    email_providers: str = ""
    # The From of every email: "Name <address>" or a bare address.
    email_from: str = "Clarion <noreply@example.com>"
    sendgrid_api_key: SecretStr | None = None
    # Overridable so tests (and EU-region accounts, https://api.eu.sendgrid.com) can aim the client elsewhere.
    sendgrid_host: str = "https://api.sendgrid.com"
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # STARTTLS on the submission port (587), or implicit TLS from the first byte (port 465): not both.
    smtp_starttls: bool = True
    smtp_use_tls: bool = False
    # A CA bundle to verify the SMTP server with (a relay with a private CA); unset: the system's CAs.
    smtp_ca_file: Path | None = None
    fcm_credentials_file: Path | None = None
    # FCM's base URL; unset: https://fcm.googleapis.com. The path /v1/projects/<project>/messages:send is appended.
    fcm_url: str | None = None
    # Every provider call ends within this, answered or not; keep it well below delivery_lease_s.
    provider_timeout_s: float = Field(default=10.0, gt=0, le=60)
    # Where the file providers write `.eml` files (and texts under sms/); unset: <data_dir>/outbox.
    outbox_dir: Path | None = None
    # SMS: "auto" is Twilio when an account SID is set, else JSON files under <outbox>/sms (local mode).
    sms_provider: Literal["auto", "twilio", "file", "simulated"] = "auto"
    # Twilio's account SID (AC…), the user name of its HTTP basic auth.
    twilio_account_sid: str | None = None
    # Twilio's auth token, the password of its HTTP basic auth.
    twilio_auth_token: SecretStr | None = None
    # The sender, in E.164 (+14155550123); or leave it unset and set a messaging service below.
    twilio_from_number: str | None = None
    # A Twilio messaging service (MG…) that picks the sender; used instead of the From number when set.
    twilio_messaging_service_sid: str | None = None
    # Twilio's API root; overridable so tests can aim the client at a fake.
    twilio_base_url: str = "https://api.twilio.com"
    # SendGrid's Signed Event Webhook: its verification key (base64 DER as SendGrid shows it, or PEM). Unset: the
    # events endpoint refuses every post (FAILED_PRECONDITION).
    sendgrid_webhook_public_key: str | None = None
    # A provider's signed post is refused when its timestamp is further than this from now (replays).
    provider_events_max_age_s: float = Field(default=600.0, ge=30, le=86_400)
    # --- end of delivery providers ---

    # --- API keys and rate limits (read by clarion.keys.auth) ---
    # Every RPC but health and reflection needs `authorization: Bearer clr_…`. Off only for trusted experiments.
    auth_required: bool = True
    # The server-side secret keyed into every stored key hash (HMAC-SHA256). Without it a stolen `api_keys` table
    # cannot be brute-forced offline. Required while auth is on; `clarion up` keeps one in <data_dir>/api-key-pepper.
    api_key_pepper: SecretStr | None = None
    # How long a key looked up in PostgreSQL is trusted in-process: a revoked key stops working within this.
    api_key_cache_ttl_s: float = Field(default=30.0, gt=0, le=300)
    # The per-key quota, a token bucket in each server process: sustained calls per second, and the burst above it.
    # 0 turns the quota off.
    api_key_rate_per_s: float = Field(default=100.0, ge=0)
    api_key_burst: int = Field(default=200, ge=1)
    # The key this process presents when it calls another Clarion service (`clarion keys create-service`): needed
    # by NotificationService when UserService or TemplateService run elsewhere, by the dispatcher and by the push
    # worker. It carries only its workload's scopes; the edge refuses it.
    service_key: SecretStr | None = None
    # The quota of each service key (one carries every project's traffic); 0 turns it off.
    service_key_rate_per_s: float = Field(default=2000.0, ge=0)
    service_key_burst: int = Field(default=4000, ge=1)
    # --- end of API keys and rate limits ---

    # OpenTelemetry: export traces over OTLP/gRPC to this collector, e.g. http://otel-collector:4317 (https:// for
    # TLS). Unset: tracing is off and costs nothing.
    otlp_endpoint: str | None = None

    # Local mode keeps its state here: embedded PostgreSQL data, the outbox, the API key.
    data_dir: Path = Path(".clarion")

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    @field_validator("email_providers")
    @classmethod
    def _provider_list(cls, value: str) -> str:
        names = [name.strip().lower() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in ("sendgrid", "smtp", "file")]
        if unknown:
            raise ValueError(f"unknown provider(s) {', '.join(unknown)}: give sendgrid, smtp or file, comma-separated")
        if len(set(names)) != len(names):
            raise ValueError("a provider may appear once")
        return ",".join(names)

    @field_validator("broker_url")
    @classmethod
    def _amqp_only(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("amqp://", "amqps://")):
            raise ValueError("must be an AMQP URL such as amqp://guest:guest@127.0.0.1:5672/")
        return value

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL such as http://otel-collector:4317")
        return value

    @field_validator("api_key_pepper")
    @classmethod
    def _long_pepper(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters, e.g. from `openssl rand -base64 32`")
        return value

    @field_validator("service_key")
    @classmethod
    def _service_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not value.get_secret_value().strip().startswith("clr_svc-"):
            raise ValueError("must be a service key (clr_svc-…), made by `clarion keys create-service WORKLOAD`")
        return SecretStr(value.get_secret_value().strip())

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
            raise ValueError("must be a PostgreSQL URL such as postgresql://user:pass@host:5432/db")
        return value


_SECRET_FIELDS = frozenset(name for name, info in Settings.model_fields.items() if "SecretStr" in str(info.annotation))


# The settings file: `.env` in the working directory unless this variable names another; empty means none.
ENV_FILE_VARIABLE = f"{ENV_PREFIX}ENV_FILE"


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment and the settings file (`.env`, see `.env.example`; a variable set in
    the environment wins over the file), raising SettingsError that names every bad variable."""
    env_file = os.environ.get(ENV_FILE_VARIABLE, ".env") or None
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[arg-type,call-arg]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            # A secret's value never reaches the terminal, even when it is wrong.
            value = "[redacted]" if field in _SECRET_FIELDS else error.get("input")
            problems.append(f"{ENV_PREFIX}{field.upper()}={value!r}: {error['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return load_settings()
