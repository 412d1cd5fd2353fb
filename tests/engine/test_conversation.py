"""A whole front-desk call against the engine through the official SDK on loopback, every server event
validated against the SDK's models (conftest.Conversation): greeting, a question answered with audio
and transcript, a barge-in that cancels and is truncated, a transfer asked back as a yes/no question and
done after "yes", its result spoken, goodbye confirmed the same way."""

from __future__ import annotations

import base64
import json

import pytest
from engine_helpers import BYTES_PER_MS, front_desk_update

GREETING = "Thank you for calling Riverside Dental. How can I help you today?"
HOURS = "Our opening hours are Monday to Friday, eight in the morning to six in the evening."


def audio_of(conv, response_id: str) -> bytes:
    return b"".join(
        base64.b64decode(e["delta"])
        for e in conv.events
        if e["type"] == "response.output_audio.delta" and e["response_id"] == response_id
    )


def transcript_deltas(conv, response_id: str) -> str:
    return "".join(
        e["delta"]
        for e in conv.events
        if e["type"] == "response.output_audio_transcript.delta" and e["response_id"] == response_id
    )


@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcma", "audio/pcm"])
async def test_front_desk_call_greeting_question_bargein_transfer_goodbye(connect, say, fmt):
    conv = await connect()
    created = await conv.expect("session.created")
    assert created["session"]["type"] == "realtime"

    await conv.send(front_desk_update(fmt))
    updated = await conv.expect("session.updated")
    assert updated["session"]["audio"]["input"]["format"]["type"] == fmt
    assert updated["session"]["audio"]["output"]["format"]["type"] == fmt

    # 1. Greeting, exactly as the gateway requests it.
    await conv.send({"type": "response.create", "response": {"instructions": f'Say exactly: "{GREETING}"'}})
    done = await conv.expect("response.done")
    rid = done["response"]["id"]
    assert done["response"]["status"] == "completed"
    spoken = done["response"]["output"][0]
    assert spoken["role"] == "assistant" and spoken["content"][0]["transcript"] == GREETING
    greeting_audio = audio_of(conv, rid)
    assert len(greeting_audio) > 2000 * BYTES_PER_MS[fmt]  # several seconds of speech, in `fmt`
    assert transcript_deltas(conv, rid) == GREETING

    # 2. A question, spoken by the caller; server VAD ends the turn and the engine answers.
    await conv.append(say("what are your opening hours", fmt))
    started = await conv.expect("input_audio_buffer.speech_started")
    stopped = await conv.expect("input_audio_buffer.speech_stopped")
    assert 0 <= started["audio_start_ms"] < stopped["audio_end_ms"]
    assert stopped["item_id"] == started["item_id"]
    committed = await conv.expect("input_audio_buffer.committed")
    assert committed["item_id"] == started["item_id"]
    heard = await conv.expect("conversation.item.input_audio_transcription.completed")
    assert "opening hour" in heard["transcript"].lower()  # Whisper's words, not a profile phrase
    done = await conv.expect("response.done")
    assert done["response"]["status"] == "completed"
    assert done["response"]["output"][0]["content"][0]["transcript"] == HOURS
    assert len(audio_of(conv, done["response"]["id"])) > 3000 * BYTES_PER_MS[fmt]

    # 3. Ask again and barge in while the answer is still streaming: the engine cancels it, the
    #    client truncates to what it played, and the interrupting words are answered (a person, asked
    #    back first).
    await conv.append(say("when are you open", fmt))
    created = await conv.expect("response.created")
    rid = created["response"]["id"]
    first = await conv.expect("response.output_audio.delta", lambda e: e["response_id"] == rid)
    item_id = first["item_id"]
    await conv.append(say("I want to talk to a human", fmt))
    await conv.expect("input_audio_buffer.speech_started")
    cancelled = await conv.expect("response.done", lambda e: e["response"]["id"] == rid)
    assert cancelled["response"]["status"] == "cancelled"
    assert cancelled["response"]["status_details"]["reason"] == "turn_detected"
    assert cancelled["response"]["output"][0]["status"] == "incomplete"
    played_ms = len(audio_of(conv, rid)) // BYTES_PER_MS[fmt] // 2
    await conv.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": played_ms,
        }
    )
    truncated = await conv.expect("conversation.item.truncated", since=cancelled)
    assert truncated["item_id"] == item_id and truncated["audio_end_ms"] == played_ms

    # A transfer is an action with consequences: asked back first, done only after a yes.
    asked = await conv.expect("response.done", since=cancelled)
    assert [o["type"] for o in asked["response"]["output"]] == ["message"]
    question = asked["response"]["output"][0]["content"][0]["transcript"]
    assert question == "Would you like me to put you through to a colleague? Please say yes or no."
    await conv.append(say("yes", fmt))
    call = await conv.expect("response.function_call_arguments.done", since=asked)
    assert call["name"] == "escalate"
    assert json.loads(call["arguments"]) == {"reason": "caller asked for a person", "urgency": "normal"}
    done = await conv.expect("response.done", since=asked)
    assert done["response"]["status"] == "completed"
    assert [o["type"] for o in done["response"]["output"]] == ["function_call"]

    # 4. The gateway runs the tool and asks for a reply that uses its result.
    await conv.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": call["call_id"],
                "output": json.dumps({"ok": True}),
            },
        }
    )
    await conv.expect("conversation.item.added", lambda e: e["item"]["type"] == "function_call_output")
    await conv.send({"type": "response.create"})
    done = await conv.expect("response.done")
    assert done["response"]["output"][0]["content"][0]["transcript"] == "Let me connect you with a colleague."
    assert audio_of(conv, done["response"]["id"])

    # 5. Goodbye: "shall I end the call?", yes, then a spoken farewell and end_call in one response.
    await conv.append(say("goodbye", fmt))
    heard = await conv.expect("conversation.item.input_audio_transcription.completed")
    assert "bye" in heard["transcript"].lower()
    asked = await conv.expect("response.done")
    assert [o["type"] for o in asked["response"]["output"]] == ["message"]
    await conv.append(say("yes", fmt))
    done = await conv.expect("response.done", since=asked)
    out = done["response"]["output"]
    assert [o["type"] for o in out] == ["message", "function_call"]
    assert out[0]["content"][0]["transcript"] == "Thank you for calling Riverside Dental. Goodbye!"
    assert out[1]["name"] == "end_call" and json.loads(out[1]["arguments"]) == {
        "reason": "caller said goodbye"
    }
    # The farewell audio is all out before the hang-up request.
    types = [e["type"] for e in conv.since(done)[:1]] + [e["type"] for e in conv.events]
    last_delta = max(i for i, e in enumerate(conv.events) if e["type"] == "response.output_audio.delta")
    end_call = next(
        i
        for i, e in enumerate(conv.events)
        if e["type"] == "response.function_call_arguments.done" and e["name"] == "end_call"
    )
    assert last_delta < end_call and "error" not in types


async def test_tool_not_offered_is_never_called(connect, say):
    conv = await connect()
    await conv.send(front_desk_update(tools=("end_call",)))  # no transfer_call on this line
    await conv.expect("session.updated")
    await conv.append(say("transfer me to billing"))
    done = await conv.expect("response.done")
    assert all(o["type"] == "message" for o in done["response"]["output"])
    assert not [e for e in conv.events if e["type"].startswith("response.function_call")]


async def test_failed_tool_result_is_spoken(connect):
    conv = await connect()
    await conv.send(front_desk_update())
    await conv.expect("session.updated")
    await conv.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "transfer me to billing"}],
            },
        }
    )
    await conv.send({"type": "response.create"})
    asked = await conv.expect("response.done")
    assert "Shall I transfer you to billing?" in asked["response"]["output"][0]["content"][0]["transcript"]
    await conv.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Yes."}]},
        }
    )
    await conv.send({"type": "response.create"})
    call = await conv.expect("response.function_call_arguments.done")
    await conv.expect("response.done", since=asked)
    await conv.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": call["call_id"],
                "output": json.dumps({"ok": False, "error": "call control unavailable"}),
            },
        }
    )
    await conv.send({"type": "response.create"})
    done = await conv.expect("response.done")
    assert (
        done["response"]["output"][0]["content"][0]["transcript"]
        == "Sorry, that did not work: call control unavailable."
    )


async def test_unrelated_speech_is_transcribed_and_gets_an_honest_answer_and_an_offer_not_a_tool(
    connect, say
):
    conv = await connect()
    await conv.send(front_desk_update())
    await conv.expect("session.updated")
    await conv.append(say("can you recommend a good restaurant in paris"))
    heard = await conv.expect("conversation.item.input_audio_transcription.completed")
    assert "paris" in heard["transcript"].lower()  # open speech is transcribed, not dropped
    done = await conv.expect("response.done")
    assert done["response"]["output"][0]["content"][0]["transcript"].startswith(
        "I am sorry, I do not have that information. Shall I transfer you"
    )
    assert not [e for e in conv.events if e["type"].startswith("response.function_call")]
    # "No" declines the offer: still no tool.
    await conv.append(say("no thank you"))
    declined = await conv.expect("response.done", since=done)
    assert declined["response"]["output"][0]["type"] == "message"
    assert not [e for e in conv.events if e["type"].startswith("response.function_call")]


async def test_text_modality_and_client_cancel(connect):
    conv = await connect()
    await conv.send(
        {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}
    )
    await conv.expect("session.updated")
    await conv.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "When are you open?"}],
            },
        }
    )
    await conv.send({"type": "response.create"})
    text = await conv.expect("response.output_text.done")
    assert text["text"] == HOURS
    assert not [e for e in conv.events if e["type"] == "response.output_audio.delta"]

    await conv.send(
        {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["audio"]}}
    )
    await conv.send(
        {"type": "response.create", "response": {"instructions": 'Say exactly: "One moment please."'}}
    )
    created = await conv.expect("response.created")
    await conv.expect("response.output_audio.delta")
    await conv.send({"type": "response.cancel"})
    done = await conv.expect("response.done", lambda e: e["response"]["id"] == created["response"]["id"])
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "client_cancelled"


async def test_manual_turns_without_server_vad(connect, say):
    conv = await connect()
    await conv.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None}},
            },
        }
    )
    await conv.expect("session.updated")
    await conv.append(say("what time do you open"))
    await conv.send({"type": "input_audio_buffer.commit"})
    heard = await conv.expect("conversation.item.input_audio_transcription.completed")
    assert "open" in heard["transcript"].lower()
    assert not [
        e for e in conv.events if e["type"] in ("input_audio_buffer.speech_started", "response.created")
    ]
    await conv.send({"type": "response.create"})
    done = await conv.expect("response.done")
    assert done["response"]["output"][0]["content"][0]["transcript"] == HOURS


async def test_speech_does_not_interrupt_or_answer_when_turn_detection_says_so(connect, say):
    conv = await connect()
    await conv.send(front_desk_update(interrupt_response=False, create_response=False))
    await conv.expect("session.updated")
    await conv.send({"type": "response.create", "response": {"instructions": f'Say exactly: "{GREETING}"'}})
    created = await conv.expect("response.created")
    await conv.expect("response.output_audio.delta")
    await conv.append(say("when are you open"))  # caller talks over the greeting
    await conv.expect("input_audio_buffer.speech_started")
    heard = await conv.expect("conversation.item.input_audio_transcription.completed")
    assert "open" in heard["transcript"].lower()
    done = await conv.expect("response.done")
    assert done["response"]["id"] == created["response"]["id"]
    assert done["response"]["status"] == "completed"  # not interrupted
    assert [e for e in conv.events if e["type"] == "response.created"] == [created]  # and not answered
    await conv.send({"type": "response.create"})  # the client decides when to answer
    done = await conv.expect("response.done", lambda e: e["response"]["id"] != created["response"]["id"])
    assert done["response"]["output"][0]["content"][0]["transcript"] == HOURS


async def test_out_of_band_spoken_response_plays_out_and_the_session_carries_on(connect):
    # `conversation: "none"` answers outside the conversation (no item added); its audio used to crash
    # the session when the first chunk was paced out.
    conv = await connect()
    await conv.send(front_desk_update())
    await conv.expect("session.updated")
    await conv.send(
        {
            "type": "response.create",
            "response": {"conversation": "none", "instructions": 'Say exactly: "Just between us."'},
        }
    )
    done = await conv.expect("response.done")
    assert done["response"]["status"] == "completed"
    assert done["response"]["conversation_id"] is None
    assert done["response"]["output"][0]["content"][0]["transcript"] == "Just between us."
    assert len(audio_of(conv, done["response"]["id"])) > 500 * BYTES_PER_MS["audio/pcmu"]
    await conv.send({"type": "response.create", "response": {"instructions": 'Say exactly: "Still here."'}})
    again = await conv.expect("response.done")
    assert again["response"]["status"] == "completed"


async def test_session_instructions_and_max_output_tokens_are_respected(connect):
    """The facts of the session's instructions are what the engine answers from (another practice,
    other hours), and `max_output_tokens` cuts the reply (a word counts as a token)."""
    conv = await connect()
    await conv.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "output_modalities": ["text"],
                "instructions": "You are Hilltop Dental.\nOpening hours: Saturdays only, nine to noon.",
            },
        }
    )
    await conv.expect("session.updated")
    ask = {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "When are you open?"}],
        },
    }
    await conv.send(ask)
    await conv.send({"type": "response.create"})
    text = await conv.expect("response.output_text.done")
    assert text["text"] == "Our opening hours are Saturdays only, nine to noon."
    await conv.send({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 4}})
    await conv.expect("session.updated")
    await conv.send(ask)
    await conv.send({"type": "response.create"})
    text = await conv.expect("response.output_text.done")
    assert text["text"] == "Our opening hours are"
