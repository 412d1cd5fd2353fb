"""`make demo`: one simulated call through the real media plane, offline.

Starts the embedded Realtime engine (`gateway model`) and `gateway serve` on free loopback ports,
synthesises a caller question with espeak-ng, places the call with `gateway call` (which speaks to the
gateway exactly as FreeSWITCH's mod_audio_stream would), prints the conversation and the latency to the
first reply audio, saves the reply under out/, and stops everything it started.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("DEMO_OUT", ROOT / "out"))
QUESTION = os.environ.get("DEMO_QUESTION", "what are your opening hours")
TOKEN = "demo-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_tcp(port: int, proc: subprocess.Popen[bytes], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} (log: {OUT / 'logs'})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start listening on port {port} within {seconds:.0f} s")


def wait_ready(admin_port: int, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway serve exited with status {proc.returncode} (log: {OUT / 'logs'})")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=0.5) as r:
                if r.status == 200:
                    return
        time.sleep(0.1)
    raise RuntimeError("gateway serve did not become ready")


def start(cmd: list[str], log_name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    log = open(OUT / "logs" / log_name, "wb")  # noqa: SIM115 - kept open for the child's lifetime
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def stop(proc: subprocess.Popen[bytes] | None, what: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        print(f"  {what} did not stop on SIGTERM; killing it")
        proc.kill()
        proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    if shutil.which("espeak-ng") is None:
        print("demo: espeak-ng is missing (make installs it from requirements/apt.txt)", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    engine_port, media_port, admin_port = free_port(), free_port(), free_port()
    procs: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        if importlib.util.find_spec("gateway.engine.server") is not None:
            engine = start([py, "-m", "gateway", "model", "--host", "127.0.0.1", "--port", str(engine_port)],
                           "model.log", env)
            engine_name = "embedded engine (gateway model)"
        else:  # before the embedded engine existed: the scripted protocol server from the tests
            fake = ROOT / "tests" / "gateway" / "realtime_fake.py"
            engine = start([py, str(fake), str(engine_port)], "model.log", env)
            engine_name = "scripted Realtime server (tests/gateway/realtime_fake.py)"
        procs.append((engine, "model"))
        print(f"* starting {engine_name} on 127.0.0.1:{engine_port}")
        wait_tcp(engine_port, engine, 60, "gateway model")

        serve_env = {**env, "GATEWAY_AUTH_TOKENS": TOKEN, "GATEWAY_MEDIA_HOST": "127.0.0.1"}
        serve_cmd = [py, "-m", "gateway", "serve", "--media-port", str(media_port), "--admin-port",
                     str(admin_port), "--model-url", f"ws://127.0.0.1:{engine_port}/v1"]
        serve = start(serve_cmd, "serve.log", serve_env)
        procs.append((serve, "serve"))
        print(f"* starting gateway serve: media ws://127.0.0.1:{media_port}/stream/<uuid>, "
              f"admin http://127.0.0.1:{admin_port}/docs")
        wait_ready(admin_port, serve, 60)

        question = OUT / "question.wav"
        subprocess.run(["espeak-ng", "-w", str(question), QUESTION], check=True, timeout=30)
        reply_wav = OUT / "reply.wav"
        print(f"* calling: the caller waits for the greeting, then says {QUESTION!r} ({question})")
        call = subprocess.run(
            [py, "-m", "gateway", "call", str(question), "--gateway", f"127.0.0.1:{media_port}",
             "--token", TOKEN, "--record", str(reply_wav), "--rate", "8000"],
            capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
        )
        try:
            summary = json.loads(call.stdout)
        except ValueError:
            print(call.stdout, call.stderr, file=sys.stderr)
            return 1
        (OUT / "call-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print()
        print("  conversation")
        agent = [t["text"] for t in summary.get("transcripts", []) if t["role"] == "agent"]
        caller = [t["text"] for t in summary.get("transcripts", []) if t["role"] == "caller"]
        if agent:
            print(f"    agent  (greeting): {agent[0]}")
        if caller:
            print(f"    caller said      : {caller[0]}")
        else:
            print(f"    caller said      : {QUESTION}  (no transcript from the engine; this was spoken)")
        for text in agent[1:]:
            print(f"    agent answered   : {text}")
        latency = summary.get("first_reply_latency_ms")
        print()
        print(f"  latency, end of caller speech -> first reply audio: "
              f"{f'{latency:.0f} ms' if latency is not None else 'no reply'}")
        print(f"  audio: greeting {summary.get('greeting_s')} s, "
              f"total agent audio {summary.get('reply_s')} s, "
              f"frames sent/received {summary.get('frames_sent')}/{summary.get('frames_received')}")
        print(f"  reply saved to {reply_wav}; summary in {OUT / 'call-summary.json'}; logs in {OUT / 'logs'}")
        if summary.get("errors"):
            print(f"  errors: {summary['errors']}")
        ok = call.returncode == 0 and latency is not None
        print()
        print("demo OK" if ok else "demo FAILED")
        return 0 if ok else 1
    finally:
        for proc, name in reversed(procs):
            stop(proc, name)


if __name__ == "__main__":
    sys.exit(main())
