"""SRTP (SDES) towards carriers, on the real FreeSWITCH build: a worker running freeswitch-conf/ with
``carrier_srtp=mandatory`` is called straight (no edge) by a second FreeSWITCH playing the carrier.

- An offer without crypto is refused with 488 (the carrier's leg ends INCOMPATIBLE_DESTINATION, its
  ``sip_term_status`` is 488) and never reaches the dialplan.
- An offer with AES_CM_128_HMAC_SHA1_80 is answered RTP/SAVP with an ``a=crypto`` line; both legs say
  ``rtp_has_crypto``; the call runs the real dialplan (stream to `gateway serve`, null-echo backend);
  the carrier's 440 Hz tone is what the worker hears (decrypted) and what the carrier hears is the
  worker's audio (the gateway's echo of that tone, or a 660 Hz tone played on the worker's leg), with no
  SRTP authentication failure on either side (a wrong
  key fails the HMAC and the packet is dropped with "unprotect failed").

Twilio secure trunking is TLS signalling plus SDES-SRTP media; the TLS half (Kamailio) is
tests/security/test_tls_and_flood.py. No SIPp here: Debian's sipp has no SRTP.
"""

from __future__ import annotations

import asyncio
import re
import uuid as uuidlib
import wave
from pathlib import Path

import numpy as np
import pytest
from harness.freeswitch import FreeSwitch
from harness.procs import GatewayServe

from gateway.esl.client import EslClient
from gateway.esl.errors import EslCommandError
from gateway.esl.protocol import Event

pytestmark = [pytest.mark.freeswitch, pytest.mark.slow]

# 127.0.0.200-202: this file's own addresses (worker, carrier, gateway).
WORKER_IP, CARRIER_IP, GATEWAY_IP = "127.0.0.200", "127.0.0.201", "127.0.0.202"
SUITE = "AES_CM_128_HMAC_SHA1_80"
# The carrier says something the whole call: a 440 Hz tone (uuid_broadcast once answered: a dial
# string's &app() argument ends at the tone's first closing parenthesis).
TONE = "tone_stream://%(1000,0,440);loops=-1"


@pytest.fixture
def srtp_path(tmp_path: Path, freeswitch_factory):  # type: ignore[no-untyped-def]
    token = "srtp-token"
    worker: FreeSwitch = freeswitch_factory(WORKER_IP, start=False,
                                            vars={"stream_token": token, "carrier_srtp": "mandatory"})
    gateway = GatewayServe(tmp_path / "gateway", GATEWAY_IP, token=token,
                           esl_workers={worker.values["worker_id"]: worker.esl_address},
                           playback_mode={worker.values["worker_id"]: "stream"},
                           env={"GATEWAY_MODEL_BACKEND": "null-echo"})
    worker.set_vars(gateway_stream_urls=gateway.stream_url, gateway_ready_urls=gateway.ready_url)
    gateway.spawn()
    try:
        worker.start()
        carrier: FreeSwitch = freeswitch_factory(CARRIER_IP)
        gateway.wait_ready()
        worker.wait_global("ai_gateways_ready", gateway.stream_url, timeout=10)
        yield worker, carrier, gateway
    finally:
        gateway.stop()


async def esl(fs: FreeSwitch) -> EslClient:
    client = EslClient(fs.host, fs.esl_port, fs.esl_password, reconnect=False,
                       events=("CHANNEL_ANSWER", "CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB"))
    await client.connect()
    return client


def tone_seconds(path: Path, freq: float) -> float:
    """Seconds of 20 ms frames of the recording whose energy is mostly at ``freq`` (and not silent)."""
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
        if w.getnchannels() > 1:
            pcm = pcm.reshape(-1, w.getnchannels()).mean(axis=1)
    n = rate // 50
    found = 0
    for i in range(0, len(pcm) - n + 1, n):
        frame = pcm[i:i + n]
        if np.sqrt(np.mean(frame ** 2)) < 100:  # about -50 dBFS: silence
            continue
        spectrum = np.abs(np.fft.rfft(frame)) ** 2
        freqs = np.fft.rfftfreq(n, 1 / rate)
        band = spectrum[(freqs > freq - 60) & (freqs < freq + 60)].sum()
        found += band / spectrum.sum() > 0.8
    return found * 0.02


def dial(worker: FreeSwitch, srtp: str, leg: str) -> str:
    return (f"originate {{origination_uuid={leg},rtp_secure_media_outbound={srtp},"
            f"rtp_secure_media_suites={SUITE},absolute_codec_string=PCMU,RECORD_READ_ONLY=true,originate_timeout=15}}"
            f"sofia/kamailio/sip:1000@{worker.host}:{worker.sip_port} &park()")


async def wait_event(queue: asyncio.Queue[Event], name: str, unique_id: str | None, within: float) -> Event:
    async with asyncio.timeout(within):
        while True:
            event = await queue.get()
            if event.name == name and (unique_id is None or event.unique_id == unique_id):
                return event


async def test_mandatory_srtp_refuses_plain_and_answers_crypto_with_media(srtp_path) -> None:  # type: ignore[no-untyped-def]
    worker, carrier, gateway = srtp_path
    c_esl, w_esl = await esl(carrier), await esl(worker)
    c_seen: asyncio.Queue[Event] = asyncio.Queue()
    w_seen: asyncio.Queue[Event] = asyncio.Queue()
    c_esl.subscribe(c_seen.put_nowait)
    w_esl.subscribe(w_seen.put_nowait)
    try:
        # 1. A plain offer: 488 before anything is answered or streamed.
        plain = str(uuidlib.uuid4())
        with pytest.raises(EslCommandError) as refused:
            await c_esl.api(dial(worker, "forbidden", plain), timeout=20)
        assert "INCOMPATIBLE_DESTINATION" in str(refused.value)
        hangup = await wait_event(c_seen, "CHANNEL_HANGUP_COMPLETE", plain, 10)
        assert hangup.get("variable_sip_term_status") == "488", dict(hangup.headers)
        assert worker.wait_channels(0, 5) == 0
        assert gateway.ready() == 200  # nothing reached the gateway; the worker still takes calls

        # 2. An offer with crypto: answered with crypto, media both ways.
        leg = str(uuidlib.uuid4())
        job = asyncio.create_task(c_esl.bgapi(dial(worker, "mandatory", leg), timeout=20))
        await wait_event(c_seen, "CHANNEL_ANSWER", leg, 20)
        assert (await job).startswith("+OK")
        await c_esl.api(f"uuid_broadcast {leg} {TONE} aleg")
        w_leg = (await wait_event(w_seen, "CHANNEL_ANSWER", None, 10)).unique_id
        assert w_leg

        answer = (await c_esl.api(f"uuid_getvar {leg} switch_r_sdp")).strip()  # what the worker answered
        assert "m=audio" in answer and "RTP/SAVP" in answer, answer
        assert re.search(rf"^a=crypto:\d+ {SUITE} inline:\S+", answer, re.M), answer
        assert "RTP/AVP " not in answer, answer
        for fs_esl, uuid in ((c_esl, leg), (w_esl, w_leg)):
            assert (await fs_esl.api(f"uuid_getvar {uuid} rtp_has_crypto")).strip() == SUITE
        offer = (await w_esl.api(f"uuid_getvar {w_leg} switch_r_sdp")).strip()  # what the carrier offered
        assert "RTP/SAVP" in offer and "a=crypto:" in offer, offer

        # What the carrier hears (RECORD_READ_ONLY: the decrypted SRTP it receives, not its own tone).
        heard = carrier.dirs["recordings"] / "heard.wav"
        got = worker.dirs["recordings"] / "got.wav"  # what the worker receives from the carrier
        await w_esl.api(f"uuid_setvar {w_leg} RECORD_READ_ONLY true")
        await c_esl.api(f"uuid_record {leg} start {heard}")
        await w_esl.api(f"uuid_record {w_leg} start {got}")
        # And the worker's own SRTP towards the carrier: a 660 Hz tone played on the worker's leg.
        await w_esl.api(f"uuid_broadcast {w_leg} {TONE.replace('440', '660')} aleg")
        await asyncio.sleep(4)  # the tone goes to the gateway and its echo comes back
        await c_esl.api(f"uuid_record {leg} stop {heard}")
        await w_esl.api(f"uuid_record {w_leg} stop {got}")
        await c_esl.api(f"uuid_kill {leg}")
        c_end = await wait_event(c_seen, "CHANNEL_HANGUP_COMPLETE", leg, 10)
        stats = {k: int(c_end.get(f"variable_rtp_audio_{k}", "0") or 0)
                 for k in ("in_media_packet_count", "out_media_packet_count")}
        # 4 s at 50 packets/s each way; generous bounds for a loaded machine.
        assert stats["out_media_packet_count"] >= 100, stats
        assert stats["in_media_packet_count"] >= 100, stats
        # The echo of its own tone: the worker decrypted the carrier's SRTP, the gateway got the audio,
        # and the carrier decrypted the worker's SRTP reply.
        assert tone_seconds(got, 440.0) >= 2.0, tone_seconds(got, 440.0)
        # The carrier hears the worker's audio: the gateway's echo of its 440 Hz tone (the module's stream
        # playback takes the worker's write path while it holds audio, which under load is most of the time)
        # or, between echo frames, the 660 Hz tone played on the worker's leg. Either is SRTP the carrier
        # decrypted (its recording is RECORD_READ_ONLY, so its own tone is not in it); how the two share the
        # 4 s depends on the machine's load, so the test asks for 2 s of the two together.
        heard_echo, heard_tone = tone_seconds(heard, 440.0), tone_seconds(heard, 660.0)
        assert heard_echo + heard_tone >= 2.0, (heard_echo, heard_tone)
        for fs in (worker, carrier):
            assert "unprotect failed" not in fs.log(), fs.host
    finally:
        await c_esl.close()
        await w_esl.close()


async def test_optional_default_and_off(freeswitch_factory) -> None:  # type: ignore[no-untyped-def]
    """No gateway here, so every call is refused; what tells is the code: 488 when the SDP negotiation
    refuses the offer, 503 (no gateway ready) when the offer was acceptable. The negotiation comes
    first: under the same conditions an unacceptable offer gets 488, not 503."""
    worker: FreeSwitch = freeswitch_factory(WORKER_IP)
    carrier: FreeSwitch = freeswitch_factory(CARRIER_IP)
    assert worker.global_var("rtp_secure_media_inbound") == "optional"  # the shipped default
    c_esl = await esl(carrier)
    seen: asyncio.Queue[Event] = asyncio.Queue()
    c_esl.subscribe(seen.put_nowait)

    async def status(srtp: str) -> str | None:
        leg = str(uuidlib.uuid4())
        with pytest.raises(EslCommandError):
            await c_esl.api(dial(worker, srtp, leg), timeout=20)
        return (await wait_event(seen, "CHANNEL_HANGUP_COMPLETE", leg, 10)).get("variable_sip_term_status")

    try:
        assert await status("forbidden") == "503"  # optional: a plain offer is taken
        assert await status("mandatory") == "503"  # optional: an SRTP-only offer is taken
        worker.set_vars(carrier_srtp="off")
        assert worker.api("reloadxml").strip() == "+OK [Success]"
        assert worker.global_var("rtp_secure_media_inbound") == "off"
        assert await status("mandatory") == "488"  # off: SRTP-only offer refused
        assert await status("forbidden") == "503"
    finally:
        await c_esl.close()


async def test_outbound_offers(freeswitch_factory) -> None:  # type: ignore[no-untyped-def]
    """What a leg the worker sends towards the carrier offers, per carrier_srtp_outbound (the carrier
    here takes any offer and then refuses the call 503: no gateway; its received SDP is what counts)."""
    worker: FreeSwitch = freeswitch_factory(WORKER_IP)
    carrier: FreeSwitch = freeswitch_factory(CARRIER_IP)
    assert worker.global_var("rtp_secure_media_outbound") == "off"  # the shipped default
    c_esl = await esl(carrier)
    seen: asyncio.Queue[Event] = asyncio.Queue()
    c_esl.subscribe(seen.put_nowait)
    got: dict[str, tuple[list[str], list[str]]] = {}
    try:
        for mode in ("off", "mandatory", "optional"):
            worker.set_vars(carrier_srtp_outbound=mode)
            assert worker.api("reloadxml").strip() == "+OK [Success]"
            worker.api(f"originate {{absolute_codec_string=PCMU,originate_timeout=10}}"
                       f"sofia/kamailio/sip:1000@{carrier.host}:{carrier.sip_port} &park()", timeout=20)
            end = await wait_event(seen, "CHANNEL_HANGUP_COMPLETE", None, 10)
            offer = end.get("variable_switch_r_sdp") or ""
            got[mode] = (re.findall(r"^m=audio \d+ (\S+)", offer, re.M),
                         re.findall(r"^a=crypto:\d+ (\S+) inline:", offer, re.M))
    finally:
        await c_esl.close()
    suites = ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]  # carrier_srtp_suites, in order
    assert got["off"] == (["RTP/AVP"], []), got
    assert got["mandatory"] == (["RTP/SAVP"], suites), got
    assert got["optional"] == (["RTP/SAVP", "RTP/AVP"], suites), got
