"""All gateway metrics in one place, named gateway_<thing>_<unit>; labels are low-cardinality (never
a call id). Exposed by the admin API at /metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

ACTIVE_CALLS = Gauge("gateway_active_calls", "Calls with a live media stream",
    registry=REGISTRY)
CALLS = Counter("gateway_calls_total", "Finished calls by outcome", ["outcome"], registry=REGISTRY)
STREAMS_REFUSED = Counter(
    "gateway_streams_refused_total", "Streams refused before or after the upgrade", ["reason"],
    registry=REGISTRY
)
AUTH_FAILURES = Counter("gateway_auth_failures_total", "Upgrade requests with a missing or wrong token",
                        registry=REGISTRY)
BARGE_INS = Counter("gateway_barge_ins_total", "Caller speech that interrupted agent audio",
    registry=REGISTRY)
MODEL_ERRORS = Counter("gateway_model_errors_total", "Model session failures by kind", ["kind"],
    registry=REGISTRY)
FALLBACKS = Counter("gateway_fallbacks_total", "Calls that heard the fallback prompt",
    registry=REGISTRY)
UNDERRUNS = Counter("gateway_playout_underruns_total", "Gaps in agent audio in the middle of a reply",
                    registry=REGISTRY)
TOOL_CALLS = Counter("gateway_tool_calls_total", "Model tool calls by tool and result", ["tool", "result"],
                     registry=REGISTRY)
REPLY_LATENCY = Histogram(
    "gateway_reply_latency_seconds",
    "End of caller speech (speech_stopped) to first agent audio sent",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0),
    registry=REGISTRY,
)
FRAME_WORK = Histogram(
    "gateway_frame_work_seconds",
    "Time spent on one inbound audio frame (validate, convert, hand to the model); 1 frame in 8 sampled",
    buckets=(5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2),
    registry=REGISTRY,
)
GC_PAUSE = Histogram(
    "gateway_gc_pause_seconds",
    "Garbage-collector runs by generation: each one stops the event loop, and every call's audio with it",
    ["generation"],
    buckets=(1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.25),
    registry=REGISTRY,
)
READY = Gauge("gateway_ready", "1 while the gateway accepts new streams",
    registry=REGISTRY)


class TrafficCollector(Collector):
    """Frame and byte counters summed at scrape time from the calls' own counters.

    Four shared Counter.inc() calls per 20 ms frame pair cost ~10 % of the media plane's CPU at 500 calls
    (each takes a lock); the calls count in plain ints and this collector adds them up when scraped."""

    FIELDS = (
        ("gateway_frames_in", "Binary audio frames received from FreeSWITCH", "frames_in"),
        ("gateway_frames_out", "streamAudio messages sent to FreeSWITCH", "frames_out"),
        ("gateway_audio_in_bytes", "L16 bytes received from FreeSWITCH", "bytes_in"),
        ("gateway_audio_out_bytes", "L16 bytes sent to FreeSWITCH", "bytes_out"),
    )

    def __init__(self) -> None:
        self.live: Callable[[], Iterable[Any]] = lambda: ()
        self.finished = {attr: 0 for _, _, attr in self.FIELDS}

    def add_finished(self, stats: Any) -> None:
        for _, _, attr in self.FIELDS:
            self.finished[attr] += getattr(stats, attr)

    def value(self, attr: str) -> int:
        return self.finished[attr] + sum(getattr(s, attr) for s in list(self.live()))

    def collect(self) -> Iterable[CounterMetricFamily]:
        for name, doc, attr in self.FIELDS:
            yield CounterMetricFamily(name, doc, value=self.value(attr))


class TenantView:
    """One tenant's part of a registry, for `generate_latest`: the samples whose `tenant` label is the
    tenant's metric label, nothing else. Families without a `tenant` label add up every tenant's calls
    (or none's), so a tenant's token gets none of them."""

    def __init__(self, registry: CollectorRegistry, label: str) -> None:
        self.registry = registry
        self.label = label

    def collect(self) -> Iterable[Metric]:
        for family in self.registry.collect():
            samples = [s for s in family.samples if s.labels.get("tenant") == self.label]
            if samples:
                mine = Metric(family.name, family.documentation, family.type, family.unit)
                mine.samples = samples
                yield mine


TRAFFIC = TrafficCollector()
REGISTRY.register(TRAFFIC)

# Security (issue 11): admin API refusals, transfer-policy refusals, media admission, model health.
ADMIN_REFUSED = Counter("gateway_admin_refused_total", "Admin API requests refused before any work",
                        ["reason"], registry=REGISTRY)
ADMIN_ACTIONS = Counter("gateway_admin_actions_total", "Admin API control actions by action and result",
                        ["action", "result"], registry=REGISTRY)
TRANSFERS_REFUSED = Counter("gateway_transfers_refused_total",
                            "Transfer or conference targets refused by the transfer policy", ["kind"],
                            registry=REGISTRY)
UPGRADES_ABORTED = Counter("gateway_upgrades_aborted_total",
                           "Connections closed before a complete upgrade (header timeout, peer reset)",
                           ["reason"], registry=REGISTRY)
MODEL_UP = Gauge("gateway_model_up", "1 while the last probe of the model endpoint succeeded",
                 registry=REGISTRY)

# Outbound calls (gateway/outbound/): `tenant` is the tenant's metric label (a handful per install).
OUTBOUND_CALLS = Counter("gateway_outbound_calls_total", "Outbound calls by tenant and final result",
                         ["tenant", "result"], registry=REGISTRY)
OUTBOUND_ACTIVE = Gauge("gateway_outbound_active_calls", "Outbound calls holding a tenant slot",
                        ["tenant"], registry=REGISTRY)
LADDER_STEPS = Counter("gateway_ladder_legs_total", "On-call ladder legs by result", ["tenant", "result"],
                       registry=REGISTRY)

# Per tenant (gateway/tenants.py), labelled with the tenant's metric_label. A tenant's token on /metrics
# gets only the series carrying its own label (gateway/admin.py, docs/outbound.md#tenants).
TENANT_CALLS = Counter("gateway_tenant_calls_total", "Finished calls (streams) by tenant and outcome",
                       ["tenant", "outcome"], registry=REGISTRY)
# Inbound streams per tenant (gateway/admission.py TenantAdmission).
TENANT_ACTIVE_STREAMS = Gauge("gateway_tenant_active_streams", "Live inbound streams by tenant", ["tenant"],
                              registry=REGISTRY)
TENANT_STREAMS_REFUSED = Counter("gateway_tenant_streams_refused_total",
                                 "Inbound streams refused at the tenant's own cap (max_inbound)", ["tenant"],
                                 registry=REGISTRY)
