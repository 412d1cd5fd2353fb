"""The profile's handoff block, the hop count and the SIP headers sized for carriers."""

from __future__ import annotations

import pytest

from gateway.handoff import routing, summary
from gateway.handoff.record import Handoff, HandoffStore, new_id
from gateway.handoff.routing import Attributes, HandoffPolicy
from gateway.profiles import Profile
from gateway.records.redact import RedactionPolicy, Redactor

BASE = {"name": "p", "instructions": "x", "tools": ["escalate"],
        "transfer_targets": {"billing": "2001", "human": "sip:+15550199@trunk"}}


def _summary(text: str = "The caller was charged twice and wants a refund.") -> summary.Summary:
    return summary.Summary(text=text, reason="double charge", urgency="high", sentiment="negative")


def test_profile_handoff_targets_must_be_named_transfer_targets():
    ok = Profile.model_validate({**BASE, "handoff": {"targets": [{"target": "billing", "queue": "q1"}]}})
    assert ok.handoff is not None and ok.handoff.max_hops == 2 and ok.handoff.targets[0].timeout_s == 20
    with pytest.raises(ValueError, match="not names in transfer_targets"):
        Profile.model_validate({**BASE, "handoff": {"targets": [{"target": "sip:evil@example.com"}]}})
    with pytest.raises(ValueError, match="listed twice"):
        twice = [{"target": "billing"}, {"target": "billing"}]
        Profile.model_validate({**BASE, "handoff": {"targets": twice}})
    with pytest.raises(ValueError):
        Profile.model_validate({**BASE, "handoff": {"attributes": {"language": "en US; drop"}}})


@pytest.mark.parametrize(("value", "hops"), [(None, 0), ("", 0), ("1", 1), (" 2 ", 2), ("-3", 0),
                                             ("999", 0), ("1;x", 0), (3, 3)])
def test_incoming_hop_count_is_a_small_number_or_zero(value, hops):
    assert routing.incoming_hops(value) == hops


def _size(headers: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())


def test_headers_carry_id_hops_attributes_and_fit_the_budget():
    h = routing.sip_headers(handoff_id="ho_x", hops=1, summary=_summary("word " * 500),
                            attributes=Attributes(skill="billing", priority=7, vip=True, language="en-US"),
                            queue="billing-queue")
    assert h["X-AI-Handoff-Id"] == "ho_x" and h["X-AI-Hops"] == "1"
    assert h["X-AI-Skill"] == "billing" and h["X-AI-Priority"] == "7" and h["X-AI-VIP"] == "true"
    assert h["X-AI-Language"] == "en-US" and h["X-AI-Queue"] == "billing-queue"
    assert h["X-AI-Urgency"] == "high" and h["X-AI-Sentiment"] == "negative"
    assert h["X-AI-Summary"].endswith("...")
    assert _size(h) <= routing.HEADER_BUDGET


def test_multibyte_summary_still_fits_in_bytes():
    h = routing.sip_headers(handoff_id="ho_x", hops=1, summary=_summary("é" * 2000),
                            attributes=Attributes(), queue=None)
    assert _size(h) <= routing.HEADER_BUDGET


def test_header_values_cannot_break_the_invite():
    s = summary.Summary(text='line one\r\nVia: SIP/2.0/UDP evil\r\n"quoted"', reason="a\nb", urgency="high")
    h = routing.sip_headers(handoff_id="ho_x", hops=1, summary=s, attributes=Attributes(), queue=None)
    assert all("\r" not in v and "\n" not in v and '"' not in v for v in h.values())


def test_store_keeps_recent_handoffs_for_a_while():
    now = [1000.0]
    store = HandoffStore(max_items=2, ttl_s=60, clock=lambda: now[0])

    def make() -> Handoff:
        return Handoff(id=new_id(), call_id="c", profile="p", created_at=now[0], hops=1, mode="blind",
                       summary=_summary(), attributes=Attributes(), queue=None, transcript=[])

    a, b, c = make(), make(), make()
    for h in (a, b, c):
        store.put(h)
    assert store.get(a.id) is None and store.get(c.id) is c  # bounded
    now[0] += 61
    assert store.get(c.id) is None  # expired
    assert a.id.startswith("ho_") and len(a.id) <= 30


def test_policy_defaults():
    p = HandoffPolicy()
    assert p.max_hops == 2 and p.mode == "blind" and p.on_no_answer == "carry_on"
    r = _summary().redacted(Redactor(RedactionPolicy()))
    assert r.text == _summary().text


@pytest.mark.parametrize("value", ["tone_stream://%(2000,4000,440,480);loops=-1", "local_stream://moh",
                                   "/usr/share/freeswitch/sounds/hold.wav", "/srv/hold/music.r8"])
def test_hold_audio_accepts_files_tones_and_local_streams(value):
    p = Profile.model_validate({**BASE, "handoff": {"mode": "warm", "hold_audio": value}})
    assert p.handoff is not None and p.handoff.hold_audio == value


@pytest.mark.parametrize("value", ["hold.wav", "/srv/../etc/passwd.wav", "/srv/hold.mp3", "http://x/hold.wav",
                                   "tone_stream://%(1,0,440) aleg", "local_stream://moh;evil", "shout://x",
                                   "tone_stream://%(1,0,440)'x"])
def test_hold_audio_refuses_anything_else(value):
    with pytest.raises(ValueError, match="hold_audio must be"):
        Profile.model_validate({**BASE, "handoff": {"mode": "warm", "hold_audio": value}})


def test_twilio_block_needs_a_sip_coach_address():
    ok = Profile.model_validate({**BASE, "handoff": {"mode": "warm", "twilio": {
        "coach_to": "sip:ai-coach@desk.sip.twilio.com", "hold_url": "https://h.example/m.mp3",
        "caller_id": "+15550100"}}})
    assert ok.handoff is not None and ok.handoff.twilio is not None
    for bad in ({"coach_to": "+15550100"}, {"coach_to": "sip:a@b?X-Evil=1"},
                {"coach_to": "sip:a@b.example", "hold_url": "ftp://x"},
                {"coach_to": "sip:a@b.example", "caller_id": "5550100"}):
        with pytest.raises(ValueError):
            Profile.model_validate({**BASE, "handoff": {"mode": "warm", "twilio": bad}})
