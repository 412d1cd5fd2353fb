"""The whole call path on loopback, assembled for one test:

    SIPp carrier (+ RTP endpoint) -> Kamailio edge (kamailio-conf/) -> FreeSWITCH worker(s)
    (freeswitch-conf/, a mod_audio_stream edition) -> `gateway serve` -> `gateway model`
    ... and transfers back out through the edge to a SIPp human (+ RTP endpoint).

Addresses come from the caller of ``CallPath`` (an ``Addresses``), so areas and helpers running in
parallel never share one.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness import sipp
from harness.edge import start_edge
from harness.freeswitch import FreeSwitch
from harness.procs import GatewayModel, GatewayServe
from harness.rtp import RtpEndpoint


@dataclass
class Addresses:
    edge: str
    workers: tuple[str, ...]
    gateway: str
    callers: tuple[str, ...]
    human: str

    @classmethod
    def block(cls, ips: list[str], workers: int = 1) -> Addresses:
        """Roles from a list of addresses: edge, workers..., gateway, human, then callers."""
        need = 3 + workers + 1
        if len(ips) < need:
            raise ValueError(f"need at least {need} addresses")
        return cls(edge=ips[0], workers=tuple(ips[1:1 + workers]), gateway=ips[1 + workers],
                   human=ips[2 + workers], callers=tuple(ips[3 + workers:]))


@dataclass
class Call:
    """One carrier call: its SIPp process and the caller's media endpoint."""

    sipp: sipp.Sipp
    rtp: RtpEndpoint
    started: float = field(default_factory=time.monotonic)
    answered: float | None = None

    def wait_answered(self, timeout: float = 15.0) -> bool:
        ok = self.sipp.wait_received("SIP/2.0 200", timeout) is not None
        if ok:
            self.answered = time.monotonic()
            sipp.learn_remote_media(self.sipp, self.rtp, timeout=5)
        return ok

    def wait_speech(self, since: float, min_s: float = 0.6, timeout: float = 15.0, quiet_s: float = 0.8) -> \
            tuple[float, float] | None:
        """Wait for a stretch of speech heard after `since` to start and then end (quiet_s of no speech);
        returns (start, end) or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            segs = [s for s in self.rtp.speech_segments(since=since, bridge_s=0.5)]
            if segs:
                start, end = segs[0].start, segs[-1].end
                if end - start >= min_s and time.monotonic() - end >= quiet_s:
                    return start, end
            time.sleep(0.05)
        return None

    def say(self, pcmu: bytes) -> float:
        """Speak now; returns when the speech will have been sent (monotonic time)."""
        duration = self.rtp.say(pcmu)
        return time.monotonic() + duration

    def wait_said(self, timeout: float = 20.0) -> float:
        deadline = time.monotonic() + timeout
        while self.rtp.queued() and time.monotonic() < deadline:
            time.sleep(0.02)
        while self.rtp.speech_end is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.rtp.speech_end is not None
        return self.rtp.speech_end

    def ask_and_confirm(self, request: bytes, yes: bytes) -> float | None:
        """Ask for an action, then say `yes` once the agent's question has been heard: the embedded engine
        asks back before any action with consequences (transfer, escalation, hand-off). Returns when the
        yes will have been sent (as `say`), or None when the agent asked nothing."""
        spoken_end = self.say(request)
        if self.wait_speech(since=spoken_end, min_s=1.5, timeout=20, quiet_s=0.8) is None:
            return None
        return self.say(yes)

    def hangup(self) -> str | None:
        """The caller hangs up now (BYE); returns the answer's status line."""
        status = sipp.send_bye(self.sipp)
        self.sipp.stop()
        return status

    def finished(self, timeout: float) -> int | None:
        return self.sipp.wait(timeout)

    def close(self) -> None:
        self.sipp.stop()
        self.rtp.close()


class CallPath:
    def __init__(self, workdir: Path, addrs: Addresses, freeswitch_factory, *, edition: str = "voxcom",
                 audio_stream_so: Path | None = None, gateway_env: dict[str, str] | None = None,
                 fs_vars: dict[str, str] | None = None, with_edge: bool = True, gateways: int = 1,
                 model: GatewayModel | None = None, human_factory=None) -> None:
        """``model``: a running `gateway model` to share (started and stopped by its owner); without
        one the path starts its own. ``human_factory(workdir, name, host, rtp) -> Sipp``: the human's
        SIPp (default: sipp.human, which answers every call)."""
        self.workdir, self.addrs = workdir, addrs
        self.edition = edition
        self.own_model = model is None
        self.model = model or GatewayModel(workdir / "model", addrs.gateway)
        token = "e2e-token"
        self.workers: list[FreeSwitch] = [
            freeswitch_factory(host, start=False, edition=edition, audio_stream_so=audio_stream_so,
                               vars={"worker_id": f"fs{i + 1}", "stream_token": token,
                                     # a dead gateway is noticed by the stream's ping within 2 s
                                     "stream_heart_beat": "2", **(fs_vars or {})})
            for i, host in enumerate(addrs.workers)]
        # voxcom and its patched build (audio_stream_so) play streamAudio in real time; upstream: files
        mode = "stream" if edition == "voxcom" else "file"
        # Several gateways (preferred first) share the one model; every worker lists them all.
        self.gateways = [GatewayServe(
            workdir / "gateway", addrs.gateway, token=token, model_url=self.model.url,
            esl_workers={fs.values["worker_id"]: fs.esl_address for fs in self.workers},
            playback_mode={fs.values["worker_id"]: mode for fs in self.workers}, env=gateway_env,
            name=f"serve{i}") for i in range(gateways)]
        self.gateway = self.gateways[0]
        for fs in self.workers:
            fs.set_vars(playback_mode=mode)
            fs.set_vars(gateway_stream_urls=",".join(g.stream_url for g in self.gateways),
                        gateway_ready_urls=",".join(g.ready_url for g in self.gateways))
        self.human_factory = human_factory or sipp.human
        self.human_rtp = RtpEndpoint(addrs.human, name="human")
        self.human_sip_port: int | None = None
        self.edge = None
        self.with_edge = with_edge
        self.calls: list[Call] = []
        self.humans: list[sipp.Sipp] = []
        self._caller_i = 0

    def start(self) -> CallPath:
        self.human_rtp.start()
        self.human: sipp.Sipp = self.human_factory(self.workdir / "sipp", "human", self.addrs.human,
                                                   self.human_rtp)
        self.humans.append(self.human)
        if self.with_edge:
            self.edge = start_edge(self.workdir / "edge", self.addrs.edge, self.workers,
                                   carriers=self.addrs.callers,
                                   carrier_term=f"sip:{self.addrs.human}:{self.human.port}",
                                   start=False)
            for fs in self.workers:
                fs.set_vars(kamailio_edge=f"{self.edge.private[0]}:{self.edge.private[1]}")
        # Start everything at once, then wait for each (FreeSWITCH's ESL comes up while Python imports).
        if self.own_model:
            self.model.spawn()
        for g in self.gateways:
            g.spawn()
        with ThreadPoolExecutor() as pool:
            list(pool.map(lambda fs: fs.start(), self.workers))
        if self.own_model:
            self.model.wait_ready()
        for g in self.gateways:
            g.wait_ready()
        # The workers' watchdogs see the gateways ready within a probe (1 s).
        for fs in self.workers:
            fs.wait_global("ai_gateways_ready", ",".join(g.stream_url for g in self.gateways), timeout=10)
        if self.edge is not None:
            self.edge.start()
            for fs in self.workers:
                self.edge.wait_flags(f"sip:{fs.host}:{fs.sip_port}", "AP", timeout=10)
        self.human.start()
        return self

    @property
    def fs(self) -> FreeSwitch:
        return self.workers[0]

    def call(self, number: str = "1000", *, caller_ip: str | None = None, **kwargs: object) -> Call:
        """Place one carrier call through the edge (or straight to the first worker without one)."""
        host = caller_ip or self.addrs.callers[self._caller_i % len(self.addrs.callers)]
        self._caller_i += 1
        rtp = RtpEndpoint(host, name=f"caller{self._caller_i}").start()
        target = (f"{self.edge.public[0]}:{self.edge.public[1]}" if self.edge is not None
                  else f"{self.fs.host}:{self.fs.sip_port}")
        s = sipp.caller(self.workdir / "sipp", f"caller{self._caller_i}", host, target, rtp, number=number,
                        **kwargs)  # type: ignore[arg-type]
        call = Call(s, rtp)
        self.calls.append(call)
        s.start()
        return call

    def logs(self) -> str:
        parts = [f"--- gateway serve {g.name} ---\n{g.log()[-6000:]}" for g in self.gateways]
        parts.append(f"--- gateway model ---\n{self.model.log()[-2000:]}")
        if self.edge is not None:
            parts.append(f"--- kamailio ---\n{self.edge.log()[-3000:]}")
        for s in [*self.humans, *(c.sipp for c in self.calls)]:
            parts.append(f"--- sipp {s.name} errors ---\n{s.errors()[-1500:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for c in self.calls:
            c.close()
        for h in self.humans:
            h.stop()
        self.human_rtp.close()
        stoppers = [*[(lambda g=g: g.stop(timeout=5)) for g in self.gateways],
                    *([lambda: self.model.stop(timeout=5)] if self.own_model else []),
                    *[fs.stop for fs in self.workers]]
        if self.edge is not None:
            stoppers.append(self.edge.stop)
        with ThreadPoolExecutor(len(stoppers)) as pool:  # FreeSWITCH takes ~4 s to shut down
            for f in [pool.submit(stop) for stop in stoppers]:
                f.result()
