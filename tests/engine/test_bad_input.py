"""Bad client input gets an `error` event (code + the offending event_id) and the session carries on;
bad connection requests are refused before the WebSocket opens."""

from __future__ import annotations

import base64

import pytest
from engine_helpers import front_desk_update


async def errors_for(conv, send, event_id: str | None = None) -> dict:
    await send
    err = await conv.expect("error")
    if event_id is not None:
        assert err["error"]["event_id"] == event_id
    return err["error"]


async def still_talks(conv, text: str = "Still here.") -> None:
    """The session survives: a fresh response is spoken in full."""
    await conv.send({"type": "response.create", "response": {"instructions": f'Say exactly: "{text}"'}})
    done = await conv.expect("response.done")
    assert done["response"]["status"] == "completed"
    assert done["response"]["output"][0]["content"][0]["transcript"] == text


async def test_malformed_events_get_errors_and_the_session_survives(connect):
    conv = await connect()
    await conv.send(front_desk_update())
    await conv.expect("session.updated")

    err = await errors_for(conv, conv.send_raw("{this is not json"))
    assert err["code"] == "invalid_json" and err["type"] == "invalid_request_error"

    err = await errors_for(conv, conv.send_raw('["a", "list"]'))
    assert err["code"] == "invalid_json"

    err = await errors_for(
        conv, conv.send_raw('{"type": "totally.unknown.event", "event_id": "evt_u"}'), "evt_u"
    )
    assert err["code"] == "invalid_event_type" and err["param"] == "type"

    err = await errors_for(
        conv,
        conv.send_raw('{"type": "input_audio_buffer.append", "event_id": "evt_b64", "audio": "%%%not-b64"}'),
        "evt_b64",
    )
    assert err["code"] == "invalid_base64"

    err = await errors_for(
        conv, conv.send_raw('{"type": "input_audio_buffer.append", "event_id": "evt_missing"}'), "evt_missing"
    )
    assert err["code"] == "invalid_value" and err["param"] == "audio"

    # Formats the protocol does not have: PCM at 16 kHz, and an unknown type.
    err = await errors_for(
        conv,
        conv.send(
            {
                "type": "session.update",
                "event_id": "evt_rate",
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
                },
            }
        ),
        "evt_rate",
    )
    assert err["code"] == "invalid_value"
    err = await errors_for(
        conv,
        conv.send(
            {
                "type": "session.update",
                "event_id": "evt_wav",
                "session": {"type": "realtime", "audio": {"output": {"format": {"type": "audio/wav"}}}},
            }
        ),
        "evt_wav",
    )
    assert err["code"] == "invalid_value"
    err = await errors_for(
        conv,
        conv.send(
            {
                "type": "session.update",
                "event_id": "evt_mods",
                "session": {"type": "realtime", "output_modalities": ["text", "audio"]},
            }
        ),
        "evt_mods",
    )
    assert err["param"] == "session.output_modalities"

    # The refused updates changed nothing: output is still μ-law.
    await still_talks(conv)
    assert conv.events[-1]["response"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}

    err = await errors_for(
        conv, conv.send({"type": "response.cancel", "event_id": "evt_cancel"}), "evt_cancel"
    )
    assert err["code"] == "response_cancel_not_active"

    err = await errors_for(
        conv, conv.send({"type": "input_audio_buffer.commit", "event_id": "evt_commit"}), "evt_commit"
    )
    assert err["code"] == "input_audio_buffer_commit_empty"

    err = await errors_for(
        conv,
        conv.send(
            {
                "type": "conversation.item.create",
                "event_id": "evt_out",
                "item": {"type": "function_call_output", "call_id": "call_nope", "output": "{}"},
            }
        ),
        "evt_out",
    )
    assert err["param"] == "item.call_id"

    err = await errors_for(conv, conv.send_raw(b"\x00\x01binary"))  # a binary frame
    assert err["code"] == "invalid_message"

    await still_talks(conv, "Nothing was dropped.")
    assert conv.events[0]["type"] == "session.created"


async def test_truncate_past_generated_audio_is_refused(connect):
    conv = await connect()
    await conv.send(front_desk_update())
    await conv.expect("session.updated")
    await still_talks(conv, "Hello.")
    done = conv.events[-1]
    item_id = done["response"]["output"][0]["id"]
    sent = sum(
        len(base64.b64decode(e["delta"])) for e in conv.events if e["type"] == "response.output_audio.delta"
    )
    generated_ms = sent // 8

    err = await errors_for(
        conv,
        conv.send(
            {
                "type": "conversation.item.truncate",
                "event_id": "evt_tr",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": generated_ms + 500,
            }
        ),
        "evt_tr",
    )
    assert err["code"] == "invalid_value" and err["param"] == "audio_end_ms"

    err = await errors_for(
        conv,
        conv.send(
            {
                "type": "conversation.item.truncate",
                "event_id": "evt_tr2",
                "item_id": "item_missing",
                "content_index": 0,
                "audio_end_ms": 0,
            }
        ),
        "evt_tr2",
    )
    assert err["code"] == "item_not_found"

    # Within the generated audio it is accepted, and the stored transcript is cut to what was heard.
    await conv.send(
        {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 0}
    )
    truncated = await conv.expect("conversation.item.truncated")
    assert truncated["audio_end_ms"] == 0
    await conv.send({"type": "conversation.item.retrieve", "item_id": item_id})
    item = (await conv.expect("conversation.item.retrieved"))["item"]
    assert item["content"][0]["transcript"] == ""


async def test_second_response_while_one_is_active_is_refused(connect):
    conv = await connect()
    await conv.send(front_desk_update())
    await conv.send(
        {
            "type": "response.create",
            "response": {
                "instructions": 'Say exactly: "A long enough sentence '
                'to still be speaking when the next request comes."'
            },
        }
    )
    first = await conv.expect("response.created")
    err = await errors_for(conv, conv.send({"type": "response.create", "event_id": "evt_dup"}), "evt_dup")
    assert err["code"] == "conversation_already_has_active_response"
    done = await conv.expect("response.done")
    assert done["response"]["id"] == first["response"]["id"] and done["response"]["status"] == "completed"


async def test_unknown_profile_is_refused_and_default_profile_is_used(engine_url):
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="any", websocket_base_url=engine_url, max_retries=0)
    with pytest.raises(Exception, match="404"):
        await client.realtime.connect(model="gpt-realtime", extra_query={"profile": "no-such-agent"}).enter()
    conn = await client.realtime.connect(model="gpt-realtime").enter()  # no profile: front-desk
    assert (await conn.recv()).type == "session.created"
    await conn.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "when are you open"}],
            },
        }
    )
    await conn.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    async for event in conn:
        if event.type == "response.done":
            assert "Monday to Friday" in event.response.output[0].content[0].text
            break
    await conn.close()
