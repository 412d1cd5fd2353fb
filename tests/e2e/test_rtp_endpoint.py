"""The RTP endpoint the end-to-end tests judge by: two of them talking over loopback (no FreeSWITCH)."""

from __future__ import annotations

import time

import numpy as np
from harness.rtp import SIPP_PCAP_DIR, RtpEndpoint, read_pcap_rtp_payloads, ulaw_decode, ulaw_encode
from speech import OPENING_HOURS, phrase


def test_ulaw_round_trip_is_within_a_quantisation_step():
    pcm = np.array([0, 100, -100, 1000, -1000, 8000, -8000, 32000, -32000], dtype=np.int16)
    back = ulaw_decode(ulaw_encode(pcm)).astype(int)
    assert np.all(np.abs(back - pcm) <= np.maximum(8, np.abs(pcm) // 16))


def test_sipps_dtmf_pcap_holds_rfc2833_events_for_its_digit():
    events = read_pcap_rtp_payloads(SIPP_PCAP_DIR / "dtmf_2833_1.pcap")
    assert events and all(len(e) == 4 and e[0] == 1 for e in events)  # event 1, 4-byte payloads
    assert events[-1][1] & 0x80  # the last ones carry the End bit


def test_speech_silence_and_gaps_are_measured_from_what_arrives():
    a = RtpEndpoint("127.0.0.36", name="a").start()
    b = RtpEndpoint("127.0.0.37", name="b").start()
    try:
        a.set_remote(b.host, b.port)
        time.sleep(0.5)  # silence first
        said_from = time.monotonic()
        a.say(phrase(OPENING_HOURS))
        while a.speech_end is None:
            time.sleep(0.02)
        time.sleep(0.5)
        a.sending = False  # a 0.6 s hole in the stream
        time.sleep(0.6)
        a.sending = True
        time.sleep(0.3)
        now = time.monotonic()
        segments = b.speech_segments(since=said_from)
        assert segments, "speech not detected"
        assert abs(segments[0].start - said_from) < 0.3
        assert 1.0 < b.speech_seconds() < 3.0
        assert b.speech_seconds(until=said_from) == 0  # the leading silence is silence
        gap = b.longest_gap(said_from, now)
        assert 0.5 < gap < 0.8, gap
        a.send_dtmf_pcap("5")
        time.sleep(0.5)
        assert any(p.pt == 101 and p.payload[0] == 5 for p in b.received)
    finally:
        a.close()
        b.close()
