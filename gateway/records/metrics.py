"""Record-store metrics, registered in the gateway's one registry (gateway.metrics.REGISTRY)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from gateway.metrics import REGISTRY

WRITTEN = Counter("gateway_records_written_total", "Record ops committed to the store", registry=REGISTRY)
DROPPED = Counter(
    "gateway_records_dropped_total",
    "Record ops dropped because the write buffer was full (store down too long)",
    registry=REGISTRY,
)
WRITE_ERRORS = Counter(
    "gateway_records_write_errors_total", "Failed store transactions (retried)", registry=REGISTRY
)
BUFFERED = Gauge("gateway_records_buffered", "Record ops waiting for the store", registry=REGISTRY)
CALLS_RECORDED = Counter(
    "gateway_records_calls_total", "Calls whose record was opened, by tenant (metric label)", ["tenant"],
    registry=REGISTRY,
)
STORE_UP = Gauge("gateway_records_store_up", "1 while the last store write succeeded", registry=REGISTRY)
WEBHOOK = Counter(
    "gateway_records_webhooks_total", "Post-call webhook deliveries by result", ["result"], registry=REGISTRY
)
REDACTIONS = Counter(
    "gateway_records_redactions_total", "Spans redacted by kind", ["kind"], registry=REGISTRY
)
CONVERSATION_SYNC = Counter(
    "gateway_records_conversation_sync_total", "Turns posted to Twilio Conversations by result", ["result"],
    registry=REGISTRY,
)
