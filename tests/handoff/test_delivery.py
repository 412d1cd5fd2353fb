"""Handoff delivery: the signed webhook (signature, retries with backoff against a failing receiver,
delivery recorded), the payload builders (generic, Twilio Flex / TaskRouter task attributes)."""

from __future__ import annotations

import json

import pytest
from handoff_receiver import Receiver

from gateway.handoff import payload
from gateway.handoff.record import Handoff, new_id
from gateway.handoff.routing import Attributes, HandoffPolicy
from gateway.handoff.service import HandoffService
from gateway.handoff.summary import extractive
from gateway.records.redact import RedactionPolicy, Redactor

SECRET = b"handoff-webhook-secret-0123456789"
TURNS = [{"role": "caller", "text": "My name is Ann Lee, call me on 415 555 0199, I was charged twice."},
         {"role": "agent", "text": "Let me get a colleague."}]


def handoff() -> Handoff:
    s = extractive(TURNS, reason="double charge", urgency="high").redacted(Redactor(RedactionPolicy()))
    return Handoff(id=new_id(), call_id="CA" + "0" * 32, profile="front-desk", created_at=1.0, hops=1,
                   mode="warm", summary=s,
                   attributes=Attributes(skill="billing", priority=5, language="en-US"),
                   queue="billing", transcript=[{"role": t["role"], "text": t["text"].replace("415 555 0199",
                                                "[PHONE ***0199]")} for t in TURNS], caller="[PHONE ***1111]")


@pytest.fixture
async def receiver():
    made: list[Receiver] = []

    async def make(**kw) -> Receiver:
        r = await Receiver(SECRET, **kw).start()
        made.append(r)
        return r

    yield make
    for r in made:
        await r.stop()


async def test_webhook_is_signed_and_carries_the_redacted_handoff(receiver):
    r = await receiver()
    service = HandoffService(webhook_secret=SECRET, webhook_backoff_s=0.01)
    h = handoff()
    d = await service.deliver(h, HandoffPolicy(webhook_url=r.url, last_turns=1))
    await service.close()
    assert d is not None and d.ok and d.attempts == 1 and d.status == "HTTP 200"
    assert h.deliveries == [d]
    (req,) = r.requests
    assert req["valid"], "the signature does not verify"
    assert req["headers"]["X-Gateway-Delivery"] == f"{h.id}:1"
    body = json.loads(req["body"])
    assert body["schema"] == "gateway.handoff.v1" and body["handoff_id"] == h.id
    assert body["attributes"] == {"skill": "billing", "priority": 5, "vip": False, "language": "en-US"}
    assert body["slots"]["callback_number"] == "[PHONE ***0199]"
    assert len(body["last_turns"]) == 1 and body["fetch"] == f"/handoffs/{h.id}"
    assert "555 0199" not in req["body"].decode(), "the webhook carried the number in clear"


async def test_a_tampered_body_does_not_verify(receiver):
    from handoff_receiver import verify

    from gateway.records.analysis import sign

    ts = "1765000000"
    headers = {"X-Gateway-Timestamp": ts, "X-Gateway-Signature": sign(SECRET, ts, b'{"a":1}')}
    assert not verify(SECRET, headers, b'{"a":2}', max_age_s=10**10)
    assert verify(SECRET, headers, b'{"a":1}', max_age_s=10**10)
    assert not verify(SECRET, headers, b'{"a":1}')  # too old: a replay


async def test_a_failing_receiver_gets_retries_with_backoff_and_the_delivery_is_recorded(receiver):
    r = await receiver(fail_first=2)
    service = HandoffService(webhook_secret=SECRET, webhook_attempts=4, webhook_backoff_s=0.05)
    h = handoff()
    d = await service.deliver(h, HandoffPolicy(webhook_url=r.url))
    await service.close()
    assert d is not None and d.ok and d.attempts == 3
    assert [q["headers"]["X-Gateway-Delivery"] for q in r.requests] == [f"{h.id}:{i}" for i in (1, 2, 3)]
    assert all(q["valid"] for q in r.requests)
    assert len({q["body"] for q in r.requests}) == 1  # the same body each time


async def test_a_receiver_that_never_accepts_is_recorded_as_failed(receiver):
    r = await receiver(fail_first=99)
    service = HandoffService(webhook_secret=SECRET, webhook_attempts=3, webhook_backoff_s=0.01)
    h = handoff()
    d = await service.deliver(h, HandoffPolicy(webhook_url=r.url))
    await service.close()
    assert d is not None and not d.ok and d.attempts == 3 and d.status == "HTTP 503"
    assert len(r.requests) == 3


async def test_a_4xx_is_not_retried(receiver):
    r = await receiver(fail_first=99, fail_status=400)
    service = HandoffService(webhook_secret=SECRET, webhook_attempts=3, webhook_backoff_s=0.01)
    d = await service.deliver(handoff(), HandoffPolicy(webhook_url=r.url))
    await service.close()
    assert d is not None and not d.ok and d.attempts == 1 and len(r.requests) == 1


async def test_an_unreachable_receiver_is_retried_then_recorded():
    service = HandoffService(webhook_secret=SECRET, webhook_attempts=2, webhook_backoff_s=0.01)
    h = handoff()
    d = await service.deliver(h, HandoffPolicy(webhook_url="http://127.0.4.11:9/handoff"))
    await service.close()
    assert d is not None and not d.ok and d.attempts == 2 and "Error" in d.status


async def test_flex_webhook_carries_task_attributes(receiver):
    r = await receiver()
    service = HandoffService(webhook_secret=SECRET, webhook_backoff_s=0.01)
    h = handoff()
    await service.deliver(h, HandoffPolicy(webhook_url=r.url, webhook_format="flex"))
    await service.close()
    (body,) = r.accepted()
    a = body["attributes"]
    assert body["handoff_id"] == h.id
    assert a["type"] == "ai_handoff" and a["channelType"] == "voice" and a["call_sid"] == h.call_id
    assert a["skills"] == ["billing"] and a["priority"] == 5 and a["language"] == "en-US"
    assert a["name"] == "Ann Lee" and a["urgency"] == "high" and a["ai_summary"] == h.summary.text
    assert a["callback_number"] == "[PHONE ***0199]"


def test_flex_task_form_is_what_taskrouter_create_task_takes():
    form = payload.flex_task_form(handoff(), 2, "WW" + "1" * 32, timeout_s=60)
    assert set(form) == {"Attributes", "WorkflowSid", "Timeout", "TaskChannel"}
    assert json.loads(form["Attributes"])["type"] == "ai_handoff"
    assert len(json.loads(form["Attributes"])["conversation"]) == 2
