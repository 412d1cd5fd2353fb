"""The carrier stand-in's SIPp scenarios against a far end that behaves like a worker behind a
multi-process proxy: Kamailio forwards replies from several UDP worker processes, so the 183 a
FreeSWITCH worker sends while its stream connects can reach the carrier after the 200 it preceded
(seen in the rolling-upgrade test: 1 call of 151 aborted "on unexpected message ... while pausing").
A carrier's transaction layer drops a provisional response that arrives after the final one
(RFC 3261 17.1.1.2); the scenarios do the same by making the INVITE a SIPp transaction. What must
still fail a call: the far end hanging up during the hold (a BYE where none is expected).

The far end here is a small UDP responder in the test, not SIPp: a SIPp UAS cannot send a provisional
response for the INVITE transaction after it has received the ACK.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
from pathlib import Path

import pytest
from kamailio_harness import sipp_uac

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "security"))
from sip_tools import all_headers, header  # noqa: E402

FAR_END = "127.0.0.240"  # this file's own addresses: the far end and the carrier
CARRIER = "127.0.0.241"


class FarEnd(threading.Thread):
    """Answers each INVITE 200; on its ACK either sends a late 183 for the INVITE (`late-183`) or hangs
    up (`bye`); answers the carrier's BYE 200."""

    def __init__(self, mode: str) -> None:
        super().__init__(daemon=True)
        self.mode = mode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((FAR_END, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.invites: dict[str, bytes] = {}
        self.late_183s = 0
        self._done = threading.Event()

    def _reply(self, msg: bytes, status: str, addr: tuple[str, int], *, sdp: bool = False) -> None:
        to = header(msg, "To")
        if ";tag=" not in to:
            to += ";tag=far1"
        body = (f"v=0\r\no=- 1 1 IN IP4 {FAR_END}\r\ns=-\r\nc=IN IP4 {FAR_END}\r\nt=0 0\r\n"
                "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n") if sdp else ""
        lines = [f"SIP/2.0 {status}", *(f"Via: {v}" for v in all_headers(msg, "Via")),
                 f"From: {header(msg, 'From')}", f"To: {to}", f"Call-ID: {header(msg, 'Call-ID')}",
                 f"CSeq: {header(msg, 'CSeq')}", f"Contact: <sip:far@{FAR_END}:{self.port}>"]
        lines += ["Content-Type: application/sdp"] if sdp else []
        lines += [f"Content-Length: {len(body)}", "", body]
        self.sock.sendto("\r\n".join(lines).encode(), addr)

    def _bye(self, invite: bytes, addr: tuple[str, int]) -> None:
        caller = re.search(r"<([^>]+)>", header(invite, "Contact")).group(1)  # type: ignore[union-attr]
        lines = [f"BYE {caller} SIP/2.0", f"Via: SIP/2.0/UDP {FAR_END}:{self.port};branch=z9hG4bK-far-bye",
                 f"From: {header(invite, 'To')};tag=far1", f"To: {header(invite, 'From')}",
                 f"Call-ID: {header(invite, 'Call-ID')}", "CSeq: 1 BYE", "Max-Forwards: 70",
                 "Content-Length: 0", "", ""]
        self.sock.sendto("\r\n".join(lines).encode(), addr)

    def run(self) -> None:
        while not self._done.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            call_id = header(data, "Call-ID")
            if data.startswith(b"INVITE"):
                self.invites[call_id] = data
                self._reply(data, "200 OK", addr, sdp=True)
            elif data.startswith(b"ACK") and call_id in self.invites:
                if self.mode == "late-183":
                    self._reply(self.invites[call_id], "183 Session Progress", addr)
                    self.late_183s += 1
                else:
                    self._bye(self.invites[call_id], addr)
            elif data.startswith(b"BYE"):
                self._reply(data, "200 OK", addr)

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=5)
        self.sock.close()


@pytest.fixture
def far_end(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    end = FarEnd(request.param)
    end.start()
    yield end
    end.stop()


@pytest.mark.parametrize("far_end", ["late-183"], indirect=True)
@pytest.mark.parametrize("scenario", ["uac-call-expect-200.xml", "uac-call-bye-may-timeout.xml"])
def test_a_late_183_after_the_200_does_not_fail_the_call(tmp_path: Path, far_end: FarEnd,
                                                         scenario: str) -> None:
    stats = sipp_uac(tmp_path, "carrier", f"{FAR_END}:{far_end.port}", calls=5, rate=10, hold_ms=500,
                     host=CARRIER, scenario=scenario, timeout_s=20)
    assert far_end.late_183s == 5  # every call got its 183 during the hold
    assert (stats.successful, stats.failed) == (5, 0), stats


@pytest.mark.parametrize("far_end", ["bye"], indirect=True)
def test_the_far_end_hanging_up_during_the_hold_still_fails_the_call(tmp_path: Path, far_end: FarEnd) -> None:
    stats = sipp_uac(tmp_path, "carrier", f"{FAR_END}:{far_end.port}", calls=3, rate=10, hold_ms=1000,
                     host=CARRIER, timeout_s=20)
    assert stats.failed == 3, stats
