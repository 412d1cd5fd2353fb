"""All gateway metrics in one place, named gateway_<thing>_<unit>; labels are low-cardinality (never
a call id). Exposed by the admin API at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
FRAMES_IN = Counter("gateway_frames_in_total", "Binary audio frames received from FreeSWITCH",
    registry=REGISTRY)
FRAMES_OUT = Counter("gateway_frames_out_total", "streamAudio messages sent to FreeSWITCH",
    registry=REGISTRY)
BYTES_IN = Counter("gateway_audio_in_bytes_total", "L16 bytes received from FreeSWITCH",
    registry=REGISTRY)
BYTES_OUT = Counter("gateway_audio_out_bytes_total", "L16 bytes sent to FreeSWITCH",
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
    "CPU time spent on one inbound audio frame (validate, convert, hand to the model)",
    buckets=(5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2),
    registry=REGISTRY,
)
READY = Gauge("gateway_ready", "1 while the gateway accepts new streams",
    registry=REGISTRY)
