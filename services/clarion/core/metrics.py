"""Every Prometheus metric Clarion exports, in one place, so code, dashboards and alerts agree on names.

Conventions (https://prometheus.io/docs/practices/naming/): `clarion_` prefix, base units (`_seconds`), counters end
in `_total`. Labels carry only bounded, non-personal values — gRPC method names, codes, channels, provider names,
outcomes — never a user id, an address, a template key or a request id.

Processes expose the default registry: the gRPC services on `CLARION_METRICS_PORT`, the dispatcher and the workers
next to their probes on `CLARION_HEALTH_PORT` (`GET /metrics`). One process running several services (`clarion up`)
exports them all from the same registry.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Latency buckets for calls that take from a fraction of a millisecond (a cached read) to seconds (a slow provider).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Time from acceptance to a provider's answer: includes quiet hours and retries, so it reaches into hours.
TIME_TO_SEND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)

# --- gRPC server (one interceptor) -------------------------------------------------------------------------------
RPC_HANDLED = Counter(
    "clarion_grpc_server_handled_total",
    "RPCs completed by the server, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_SECONDS = Histogram(
    "clarion_grpc_server_handling_seconds",
    "Time the server took to answer an RPC, by method.",
    ["grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)

# --- NotificationService ------------------------------------------------------------------------------------------
# NotificationService's and the workers' calls of UserService and TemplateService, whatever the transport (in process
# under `clarion serve all`, gRPC otherwise): `code` is the gRPC code the caller got (UNAVAILABLE for a sick service).
DEPENDENCY_CALLS = Counter(
    "clarion_dependency_calls_total",
    "Calls of another Clarion service, by service, method, transport (grpc, in_process) and the code answered.",
    ["service", "method", "transport", "code"],
)
DEPENDENCY_SECONDS = Histogram(
    "clarion_dependency_call_seconds",
    "Duration of calls of another Clarion service, by service, method and transport.",
    ["service", "method", "transport"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
NOTIFICATIONS_ACCEPTED = Counter(
    "clarion_notifications_accepted_total",
    "Notifications accepted by SendNotification (new rows; replays are not counted), by priority.",
    ["priority"],
)
NOTIFICATIONS_REPLAYED = Counter(
    "clarion_notifications_replayed_total",
    "SendNotification calls answered from an earlier call with the same idempotency key.",
)

# --- Dispatcher ---------------------------------------------------------------------------------------------------
DELIVERIES_PUBLISHED = Counter(
    "clarion_dispatcher_deliveries_published_total",
    "Deliveries the dispatcher handed to the broker, by channel.",
    ["channel"],
)
DELIVERIES_SKIPPED = Counter(
    "clarion_dispatcher_deliveries_skipped_total",
    # The name is older than planning at accept: NotificationService counts the deliveries it plans as skipped, the
    # dispatcher those a check at their due time skips.
    "Deliveries planned as skipped, or skipped when they fell due, by channel and reason (opted out, no address...).",
    ["channel", "reason"],
)
DISPATCHER_LAG = Gauge(
    "clarion_dispatcher_lag_seconds",
    "Age of the oldest delivery that is due but not yet published (0 when none is waiting).",
)
QUEUE_MESSAGES = Gauge(
    "clarion_queue_messages",
    "Messages ready in a broker work queue, as the broker reports it (sampled by the dispatcher).",
    ["queue"],
)
DEAD_LETTERS = Gauge(
    "clarion_dead_letters_pending",
    "Deliveries currently dead-lettered (FAILED and not replayed), sampled from the database by the dispatcher.",
)

# --- Delivery workers ---------------------------------------------------------------------------------------------
# outcome: sent | retry (transient failure, rescheduled) | failed (permanent or out of attempts) | deferred (parked
# while the provider's breaker is open, no attempt spent).
DELIVERIES = Counter(
    "clarion_deliveries_total",
    "Delivery attempts' outcomes, by channel, provider and outcome.",
    ["channel", "provider", "outcome"],
)
DEAD_LETTERED = Counter(
    "clarion_dead_letters_total",
    "Deliveries dead-lettered by a worker (permanent failure or attempts exhausted), by channel and provider.",
    ["channel", "provider"],
)
ATTEMPT_SECONDS = Histogram(
    "clarion_delivery_attempt_seconds",
    "Time a provider call took, whatever its result, by channel and provider.",
    ["channel", "provider"],
    buckets=LATENCY_BUCKETS,
)
TIME_TO_SEND = Histogram(
    "clarion_delivery_time_to_send_seconds",
    "Time from a notification's acceptance to the provider accepting its delivery, by channel and provider.",
    ["channel", "provider"],
    buckets=TIME_TO_SEND_BUCKETS,
)

# --- Circuit breakers and cache ----------------------------------------------------------------------------------
# breaker: "provider:<name>" (a worker's provider breaker) or "client:<service>" (a gRPC dependency's breaker).
BREAKER_STATE = Gauge(
    "clarion_circuit_breaker_state",
    "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
    ["breaker"],
)
BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN = 0, 1, 2
CACHE_REQUESTS = Counter(
    "clarion_cache_requests_total",
    "Read-through cache lookups, by cache (users, templates...) and result (hit | miss | error).",
    ["cache", "result"],
)
