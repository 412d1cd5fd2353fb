"""SIPp callees for outbound calls: what the carrier side does with the INVITE the edge relays (answer,
busy, ring until cancelled, refuse), swapped in as the CallPath's `human` on the same address and port
(the edge's CARRIER_TERM_URI)."""

from __future__ import annotations

import re
from datetime import datetime

from harness import sipp
from harness.callpath import CallPath

_HDRS = """[last_Via:]
      [last_From:]
      [last_To:];tag=[pid]R[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]"""

REFUSE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="callee refuses with {code}">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[

      SIP/2.0 180 Ringing
      {hdrs}
      Contact: <sip:callee@[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="300"/>
  <send>
    <![CDATA[

      SIP/2.0 {code} {reason}
      {hdrs}
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
</scenario>
"""

RING_UNTIL_CANCEL = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="callee rings and never answers">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" check_it="true" assign_to="cseq"/>
    </action>
  </recv>
  <send>
    <![CDATA[

      SIP/2.0 180 Ringing
      {hdrs}
      Contact: <sip:callee@[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>
  <recv request="CANCEL" timeout="{wait_ms}"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]R[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send>
    <![CDATA[

      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]R[call_number]
      [last_Call-ID:]
      CSeq: [$cseq] INVITE
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
</scenario>
"""


def swap_callee(path: CallPath, xml: str | None = None, *, calls: int = 1, ring_ms: int = 0) -> sipp.Sipp:
    """Replace the path's carrier-side SIPp with `xml` (None: the answering human of harness.sipp) on the
    address and port the edge sends to."""
    old = path.human
    port = old.port
    old.stop()
    if xml is None:
        new = sipp.human(path.workdir / "sipp", f"callee{len(path.humans)}", old.host, path.human_rtp,
                         ring_ms=ring_ms, calls=calls)
    else:
        new = sipp.Sipp(path.workdir / "sipp", f"callee{len(path.humans)}", old.host, xml, ["-m", str(calls)])
    new.port = port
    path.humans.append(new)
    path.human = new
    return new.start()


def refusing(code: int, reason: str) -> str:
    return REFUSE.format(code=code, reason=reason, hdrs=_HDRS)


def ringing_forever(wait_s: float = 120) -> str:
    return RING_UNTIL_CANCEL.format(hdrs=_HDRS, wait_ms=int(wait_s * 1000))


_RECEIVED = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n"
                       r"(?:UDP|TCP) message received[^\n]*\n\n?INVITE (\S+)", re.M)


def invites(callee: sipp.Sipp) -> list[tuple[float, str]]:
    """(arrival time, R-URI user) of every INVITE the callee received, in order (SIPp's own clock)."""
    if not callee.messages_path.exists():
        return []
    text = callee.messages_path.read_text(errors="replace")
    out = []
    for stamp, uri in _RECEIVED.findall(text):
        t = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
        out.append((t, uri.split(":", 1)[1].split("@", 1)[0]))
    return out


BY_NUMBER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="callee: {ring_only} rings until cancelled, anyone else answers">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="^INVITE sip:{ring_only_re}@" search_in="msg" check_it="false" assign_to="ringonly"/>
      <ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" check_it="true" assign_to="cseq"/>
    </action>
  </recv>
  <send>
    <![CDATA[

      SIP/2.0 180 Ringing
      {hdrs}
      Contact: <sip:callee@[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>
  <nop next="ring" test="ringonly"/>
  <pause milliseconds="300"/>
  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
      {hdrs}
      Contact: <sip:callee@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      {sdp}

    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE" timeout="{wait_ms}"/>
  <send next="end">
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
  <label id="ring"/>
  <recv request="CANCEL" timeout="{wait_ms}"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]R[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send>
    <![CDATA[

      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]R[call_number]
      [last_Call-ID:]
      CSeq: [$cseq] INVITE
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
  <label id="end"/>
</scenario>
"""


def answering_except(path: CallPath, ring_only: str, wait_s: float = 120) -> str:
    """One callee for several numbers: `ring_only` rings until cancelled, every other number answers with
    its media at the path's human RTP endpoint."""
    sdp = sipp._SDP.format(user="callee", rtp_ip=path.human_rtp.host, rtp_port=path.human_rtp.port)
    return BY_NUMBER.format(ring_only=ring_only, ring_only_re=re.escape(ring_only), hdrs=_HDRS, sdp=sdp,
                            wait_ms=int(wait_s * 1000))
