"""Per-frame cost of server-side WebSocket framing: wsproto (python-hyper's sans-I/O library) against the
gateway's own `gateway/media_raw.FrameParser` + `server_frame`. Measurement only.

    .venv/bin/pip install wsproto==1.3.2      # not a gateway dependency (docs/benchmarks.md says why)
    .venv/bin/python benchmarks/ws_framing.py

One "frame pair" is what the media plane does 50 times a second per call: parse one masked 320-byte
binary frame (20 ms of 8 kHz L16, as mod_audio_stream sends it) and build one text frame carrying the
gateway's streamAudio JSON for 20 ms of agent audio. Best of 5 runs of 20,000 pairs, in microseconds.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.client.wsframe import OP_BINARY, encode_frame  # noqa: E402
from gateway.media_raw import OP_TEXT, FrameParser, server_frame  # noqa: E402
from gateway.proto.audio_stream import build_stream_audio  # noqa: E402

N = 20_000
FRAME = encode_frame(OP_BINARY, os.urandom(320))
REPLY = build_stream_audio(os.urandom(320), 8000)


def gateway_framing() -> float:
    parser = FrameParser(64 * 1024)
    t = time.perf_counter()
    for _ in range(N):
        for _op, _payload in parser.feed(FRAME):
            server_frame(OP_TEXT, REPLY.encode())
    return (time.perf_counter() - t) / N * 1e6


def wsproto_framing() -> float:
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import BytesMessage, Message

    conn = Connection(ConnectionType.SERVER)
    t = time.perf_counter()
    for _ in range(N):
        conn.receive_data(FRAME)
        for event in conn.events():
            if isinstance(event, BytesMessage) and event.message_finished:
                conn.send(Message(data=REPLY))
    return (time.perf_counter() - t) / N * 1e6


def main() -> int:
    try:
        import wsproto
    except ImportError:
        print("wsproto is not installed: .venv/bin/pip install wsproto==1.3.2", file=sys.stderr)
        return 2
    result = {"wsproto": wsproto.__version__ if hasattr(wsproto, "__version__") else "?",
              "frame_pair_us": {"gateway/media_raw": round(min(gateway_framing() for _ in range(5)), 2),
                                "wsproto": round(min(wsproto_framing() for _ in range(5)), 2)},
              "loadavg_1m": round(os.getloadavg()[0], 2)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
