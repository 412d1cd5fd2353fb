"""SIPp humans for warm transfers: one UAS that answers each INVITE the way its R-URI's number says
(accept, decline with 603, busy with 486, ring and never answer), and a carrier caller whose INVITE
carries extra headers (X-AI-Hops). Signalling only: media is the harness's RtpEndpoint."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from harness import sipp
from harness.rtp import RtpEndpoint

_REPLY = """<send>
    <![CDATA[

      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]H[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" timeout="5000" ontimeout="end"/>
  <nop next="end"/>"""

TEMPLATE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="human answering by number">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="INVITE sip:({busy})@" search_in="msg" check_it="false" assign_to="isbusy"/>
      <ereg regexp="INVITE sip:({decline})@" search_in="msg" check_it="false" assign_to="isdecline"/>
      <ereg regexp="INVITE sip:({noanswer})@" search_in="msg" check_it="false" assign_to="isnoanswer"/>
      <ereg regexp="CSeq: ([0-9]+) INVITE" search_in="msg" check_it="false" assign_to="wholecseq,invitecseq"/>
    </action>
  </recv>
  <nop hide="true">
    <action>
      <!-- SIPp refuses a variable referenced only once: the whole-match slot of the CSeq regexp. -->
      <assignstr assign_to="wholecseq" value="[$wholecseq]"/>
    </action>
  </nop>
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
  <nop next="busy" test="isbusy"/>
  <nop next="decline" test="isdecline"/>
  <nop next="noanswer" test="isnoanswer"/>
  <send>
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
  <pause milliseconds="{ring_ms}"/>
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
  <recv request="BYE" timeout="{wait_ms}" ontimeout="end"/>
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
  <nop next="end"/>

  <label id="busy"/>
  {busy_reply}

  <label id="decline"/>
  {decline_reply}

  <label id="noanswer"/>
  <send>
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
  <recv request="CANCEL" timeout="{wait_ms}" ontimeout="end"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]H[call_number]
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
      [last_To:];tag=[pid]H[call_number]
      [last_Call-ID:]
      CSeq: [$invitecseq] INVITE
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" timeout="5000" ontimeout="end"/>

  <label id="end"/>
</scenario>
"""


def _alternatives(numbers: tuple[str, ...]) -> str:
    # A number that never occurs keeps the regexp valid when a behaviour is unused.
    return "|".join(n.replace("+", "\\+") for n in numbers) or "no-such-number"


def human(workdir: Path, name: str, host: str, rtp: RtpEndpoint, *, busy: tuple[str, ...] = (),
          decline: tuple[str, ...] = (), noanswer: tuple[str, ...] = (), ring_ms: int = 300,
          wait_bye_s: float = 120, calls: int = 10) -> sipp.Sipp:
    xml = TEMPLATE.format(busy=_alternatives(busy), decline=_alternatives(decline),
                          noanswer=_alternatives(noanswer), ring_ms=ring_ms, wait_ms=int(wait_bye_s * 1000),
                          busy_reply=_REPLY.format(status="486 Busy Here"),
                          decline_reply=_REPLY.format(status="603 Decline"),
                          sdp=sipp._SDP.format(user="human", rtp_ip=rtp.host, rtp_port=rtp.port))
    return sipp.Sipp(workdir, name, host, xml, ["-m", str(calls)])


def human_factory(**behaviour: object):
    """For CallPath(human_factory=...)."""
    return partial(human, **behaviour)


def caller_with_headers(workdir: Path, name: str, host: str, target: str, rtp: RtpEndpoint, *,
                        headers: dict[str, str], number: str = "1000", wait_bye_s: float = 90) -> sipp.Sipp:
    """sipp.caller's carrier call, with `headers` added to its INVITE."""
    s = sipp.caller(workdir, name, host, target, rtp, number=number, wait_bye_s=wait_bye_s)
    xml = s.scenario.read_text()
    extra = "".join(f"      {k}: {v}\n" for k, v in headers.items())
    xml = xml.replace("      Max-Forwards: 70\n      Content-Type: application/sdp",
                      f"      Max-Forwards: 70\n{extra}      Content-Type: application/sdp", 1)
    assert extra in xml
    s.scenario.write_text(xml)
    return s
