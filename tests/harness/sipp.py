"""SIPp as the carrier (UAC) and as the human a transfer reaches (UAS), signalling only: their SDP points
at harness.rtp endpoints, which send and record the media.

Scenarios are rendered per call from the templates below (number, SDP address, when to hang up), so
a test reads as what the caller does. Every message SIPp sends or receives is kept (-trace_msg) so a test
can assert on the R-URI and headers on the wire.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.net import free_port
from harness.rtp import RtpEndpoint

SIPP = "/usr/bin/sipp"

_SDP = """v=0
      o={user} 1 1 IN IP4 {rtp_ip}
      s=-
      c=IN IP4 {rtp_ip}
      t=0 0
      m=audio {rtp_port} RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=ptime:20
      a=sendrecv"""

_DLG = """Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]C[call_number]
      To: <sip:{number}@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]"""

CALLER_TEMPLATE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="carrier caller">
  <send retrans="500" start_txn="invite">
    <![CDATA[
      INVITE sip:{number}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]C[call_number]
      To: <sip:{number}@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{caller}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      {sdp}
    ]]>
  </send>
  <recv response="100" optional="true" response_txn="invite"/>
  <recv response="180" optional="true" response_txn="invite"/>
  <recv response="183" optional="true" response_txn="invite"/>
  {answer}
</scenario>
"""

ANSWER_200 = """<recv response="200" rtd="true" rrs="true" response_txn="invite"/>
  <send ack_txn="invite">
    <![CDATA[
      ACK [next_url] SIP/2.0
      [routes]
      {dlg}
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  {after}"""

HANGUP_AFTER = """<pause milliseconds="{hold_ms}"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      [routes]
      {dlg}
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>"""

WAIT_BYE = """<recv request="BYE" timeout="{wait_ms}"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>"""

# A refusal (e.g. 503 from the edge when no worker can take the call): ACKed hop by hop.
ANSWER_FAIL = """<recv response="{code}" rtd="true" response_txn="invite"/>
  <send ack_txn="invite">
    <![CDATA[
      ACK sip:{number}@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]C[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>"""

HUMAN_TEMPLATE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="human">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[

      SIP/2.0 100 Trying
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  {ring}
  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]H[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:human@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      {sdp}

    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE" timeout="{wait_ms}"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""

HUMAN_RING = """<send>
    <![CDATA[

      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]H[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:human@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="{ring_ms}"/>"""


@dataclass
class SipMessage:
    direction: str  # "sent" or "received"
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    def header(self, name: str) -> str | None:
        m = re.search(rf"^{re.escape(name)}\s*:\s*(.*)$", self.text, re.M | re.I)
        return m.group(1).strip() if m else None

    @property
    def body(self) -> str:
        parts = re.split(r"\r?\n\r?\n", self.text, maxsplit=1)
        return parts[1] if len(parts) > 1 else ""


def parse_messages(path: Path) -> list[SipMessage]:
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    out: list[SipMessage] = []
    for block in re.split(r"^-{20,}.*$", text, flags=re.M):
        m = re.search(r"^(UDP|TCP) message (sent|received)[^\n]*\n\n?(.*)", block, re.S | re.M)
        if m:
            out.append(SipMessage(m.group(2), m.group(3).strip("\n")))
    return out


def sdp_media(sdp: str) -> tuple[str, int] | None:
    c = re.search(r"^c=IN IP4 ([0-9.]+)", sdp, re.M)
    m = re.search(r"^m=audio (\d+)", sdp, re.M)
    return (c.group(1), int(m.group(1))) if c and m else None


class Sipp:
    """One SIPp process running a rendered scenario, in the foreground of its own process group."""

    def __init__(self, workdir: Path, name: str, host: str, scenario_xml: str, args: list[str]) -> None:
        self.workdir, self.name, self.host = workdir, name, host
        workdir.mkdir(parents=True, exist_ok=True)
        self.scenario = workdir / f"{name}.xml"
        self.scenario.write_text(scenario_xml)
        self.port = free_port(host)
        self.messages_path = workdir / f"{name}-messages.log"
        self.errors_path = workdir / f"{name}-errors.log"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sipp:
        cmd = [SIPP, *self.args, "-sf", str(self.scenario), "-i", self.host, "-p", str(self.port),
               "-mp", str(free_port(self.host, tcp=False, span=4)), "-nostdin", "-trace_msg",
               "-message_file", str(self.messages_path), "-trace_err", "-error_file", str(self.errors_path),
               "-max_socket", "64"]
        log = (self.workdir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        return self

    def wait(self, timeout: float) -> int | None:
        """Exit status (0: every call succeeded), or None if still running after timeout."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def messages(self) -> list[SipMessage]:
        return parse_messages(self.messages_path)

    def received(self, start: str) -> list[SipMessage]:
        return [m for m in self.messages() if m.direction == "received" and m.first_line.startswith(start)]

    def errors(self) -> str:
        return self.errors_path.read_text(errors="replace") if self.errors_path.exists() else ""

    def wait_received(self, start: str, timeout: float) -> SipMessage | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.received(start)
            if found:
                return found[0]
            if self.proc is not None and self.proc.poll() is not None:
                found = self.received(start)
                return found[0] if found else None
            time.sleep(0.05)
        return None


def caller(workdir: Path, name: str, host: str, target: str, rtp: RtpEndpoint, *, number: str = "1000",
           caller_id: str = "15550001111", hangup_after_ms: int | None = None, wait_bye_s: float = 60,
           expect: int = 200, timeout_s: float = 90) -> Sipp:
    """The carrier placing one call to target (host:port of the edge) with its media at rtp."""
    dlg = _DLG.format(caller=caller_id, number=number)
    if expect != 200:
        answer = ANSWER_FAIL.format(code=expect, number=number, caller=caller_id)
    else:
        after = (HANGUP_AFTER.format(hold_ms=hangup_after_ms, dlg=dlg) if hangup_after_ms is not None
                 else WAIT_BYE.format(wait_ms=int(wait_bye_s * 1000)))
        answer = ANSWER_200.format(dlg=dlg, after=after)
    xml = CALLER_TEMPLATE.format(number=number, caller=caller_id, answer=answer,
                                 sdp=_SDP.format(user="caller", rtp_ip=rtp.host, rtp_port=rtp.port))
    args = [target, "-m", "1", "-timeout", f"{int(timeout_s)}s", "-timeout_error"]
    return Sipp(workdir, name, host, xml, args)


def human(workdir: Path, name: str, host: str, rtp: RtpEndpoint, *, ring_ms: int = 0, wait_bye_s: float = 120,
          calls: int = 1) -> Sipp:
    """The human a transfer reaches: answers after ring_ms, media at rtp, waits for the BYE."""
    ring = HUMAN_RING.format(ring_ms=ring_ms) if ring_ms else ""
    xml = HUMAN_TEMPLATE.format(ring=ring, wait_ms=int(wait_bye_s * 1000),
                                sdp=_SDP.format(user="human", rtp_ip=rtp.host, rtp_port=rtp.port))
    return Sipp(workdir, name, host, xml, ["-m", str(calls)])


def learn_remote_media(sipp: Sipp, rtp: RtpEndpoint, timeout: float = 10.0) -> bool:
    """Point rtp at the address in the peer's SDP (200 OK for a caller, INVITE for the human), as soon
    as SIPp has written it; symmetric RTP covers a trace that is not yet on disk."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in sipp.messages():
            answer = "SIP/2.0 200" in m.first_line or m.first_line.startswith("INVITE")
            if m.direction == "received" and answer:
                media = sdp_media(m.body)
                if media:
                    rtp.set_remote(*media)
                    return True
        if rtp.remote is not None:
            return True
        time.sleep(0.05)
    return False


def send_bye(sipp: Sipp, timeout: float = 5.0) -> str | None:
    """Hang up the caller's answered call *now*, from Python: SIPp cannot be told when, so this builds
    the in-dialog BYE from the 200 OK it received (route set, tags, Contact) and sends it from the same
    address (another port). Returns the status line of the answer (None without one). The SIPp process
    is left waiting for a BYE that never comes: stop it afterwards."""
    ok = next((m for m in sipp.messages() if m.direction == "received" and "SIP/2.0 200" in m.first_line
               and "INVITE" in (m.header("CSeq") or "")), None)
    if ok is None:
        raise AssertionError("no 200 OK to the INVITE yet")
    routes = re.findall(r"^Record-Route\s*:\s*(.*)$", ok.text, re.M | re.I)
    route_uris = [u.strip() for line in routes for u in line.split(",")][::-1]
    contact = re.search(r"<([^>]+)>", ok.header("Contact") or "").group(1)  # type: ignore[union-attr]
    first = re.search(r"sip:([0-9.]+):(\d+)", route_uris[0] if route_uris else contact)
    assert first is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((sipp.host, 0))
        sock.settimeout(timeout)
        port = sock.getsockname()[1]
        lines = [f"BYE {contact} SIP/2.0",
                 f"Via: SIP/2.0/UDP {sipp.host}:{port};branch=z9hG4bK{random.getrandbits(48):x};rport",
                 *[f"Route: {r}" for r in route_uris],
                 f"From: {ok.header('From')}", f"To: {ok.header('To')}", f"Call-ID: {ok.header('Call-ID')}",
                 "CSeq: 2 BYE", "Max-Forwards: 70", "Content-Length: 0", "", ""]
        sock.sendto("\r\n".join(lines).encode(), (first.group(1), int(first.group(2))))
        try:
            while True:
                data = sock.recv(65535).decode(errors="replace")
                status = data.split("\r\n", 1)[0]
                if not status.startswith("SIP/2.0 1"):
                    return status
        except TimeoutError:
            return None
