"""The Twilio Media Streams codec, fed the messages of Twilio's documentation byte for byte
(https://www.twilio.com/docs/voice/media-streams/websocket-messages)."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.proto.audio_stream import StreamProtocolError
from gateway.proto.media import CallerAudio, Dtmf, MarkPlayed, StreamStart, StreamStopped
from gateway.proto.twilio_media import TwilioMediaCodec

STREAM = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA362f4ea1ab0e2dc3b62c6fcd8ab9c6b6"
ACCOUNT = "AC2f0ac1ac05bf7a34b6d8b9c1f3f3e1a0"

CONNECTED = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
START = ('{"event": "start", "sequenceNumber": "1", "start": {"accountSid": "' + ACCOUNT + '", '
         '"streamSid": "' + STREAM + '", "callSid": "' + CALL + '", "tracks": ["inbound"], '
         '"mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}, '
         '"customParameters": {"profile": "front-desk", "caller": "+15550111", "called": "+15550100"}}, '
         '"streamSid": "' + STREAM + '"}')
PAYLOAD = base64.b64encode(bytes(range(160))).decode()
MEDIA = ('{"event": "media", "sequenceNumber": "3", "media": {"track": "inbound", "chunk": "1", '
         '"timestamp": "5", "payload": "' + PAYLOAD + '"}, "streamSid": "' + STREAM + '"}')
DTMF = ('{"event": "dtmf", "streamSid": "' + STREAM + '", "sequenceNumber": "5", '
        '"dtmf": {"track": "inbound_track", "digit": "1"}}')
MARK = '{"event": "mark", "sequenceNumber": "4", "streamSid": "' + STREAM + '", "mark": {"name": "my label"}}'
STOP = ('{"event": "stop", "sequenceNumber": "5", "streamSid": "' + STREAM + '", '
        '"stop": {"accountSid": "' + ACCOUNT + '", "callSid": "' + CALL + '"}}')


def started() -> TwilioMediaCodec:
    codec = TwilioMediaCodec()
    assert codec.feed_text(CONNECTED) == []
    return codec


def test_start_describes_the_call_with_its_parameters() -> None:
    codec = started()
    (start,) = codec.feed_text(START)
    assert isinstance(start, StreamStart)
    assert (start.call_id, start.stream_id, start.rate, start.encoding) == (CALL, STREAM, 8000, "pcmu")
    assert (start.profile, start.caller, start.callee) == ("front-desk", "+15550111", "+15550100")


def test_every_inbound_event_type() -> None:
    codec = started()
    codec.feed_text(START)
    assert codec.feed_text(MEDIA) == [CallerAudio(bytes(range(160)))]  # mu-law straight through
    assert codec.feed_text(DTMF) == [Dtmf("1")]
    assert codec.feed_text(MARK) == [MarkPlayed("my label")]
    assert codec.feed_text(STOP) == [StreamStopped("twilio stop")]


def test_outbound_messages_are_twilios() -> None:
    codec = started()
    codec.feed_text(START)
    assert json.loads(codec.agent_audio(b"\xff" * 160)) == {
        "event": "media", "streamSid": STREAM, "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}}
    assert json.loads(codec.mark("item_1:3") or "") == {"event": "mark", "streamSid": STREAM,
                                                        "mark": {"name": "item_1:3"}}
    assert json.loads(codec.clear() or "") == {"event": "clear", "streamSid": STREAM}


@pytest.mark.parametrize("message,code,reason", [
    ('{"event": "ringing", "streamSid": "' + STREAM + '"}', 1002, "unknown event"),
    (MEDIA.replace(STREAM, "MZ" + "0" * 32), 1008, "another streamSid"),
    (MEDIA.replace(PAYLOAD, "not*base64!"), 1007, "not base64"),
    (MEDIA.replace(PAYLOAD, base64.b64encode(bytes(9000)).decode()), 1009, "payload over"),
    ("{not json", 1007, "not valid JSON"),
    ('["media"]', 1007, "no event"),
    (DTMF.replace('"digit": "1"', '"digit": "12; drop"'), 1007, "valid digit"),
    (START, 1002, "second start"),
])
def test_bad_input_is_refused_with_a_close_code(message: str, code: int, reason: str) -> None:
    codec = started()
    codec.feed_text(START)
    with pytest.raises(StreamProtocolError, match=reason) as info:
        codec.feed_text(message)
    assert info.value.close_code == code


def test_media_before_start_and_wrong_formats_are_refused() -> None:
    with pytest.raises(StreamProtocolError, match="media before start"):
        started().feed_text(MEDIA)
    with pytest.raises(StreamProtocolError, match="mediaFormat"):
        started().feed_text(START.replace("audio/x-mulaw", "audio/l16"))
    with pytest.raises(StreamProtocolError, match="callSid"):
        started().feed_text(START.replace(CALL, "CA; api hangup"))
    with pytest.raises(StreamProtocolError, match="only text"):
        started().feed_binary(b"\x00" * 160)
    with pytest.raises(StreamProtocolError, match="no start"):
        started().start_timeout()


def test_conversation_sid_parameter_becomes_the_conversation_id(caplog: pytest.LogCaptureFixture) -> None:
    conversation = "CH" + "0123456789abcdef" * 2
    called = '"called": "+15550100"'
    with_sid = START.replace(called, f'{called}, "ConversationSid": "{conversation}"')
    (start,) = started().feed_text(with_sid)
    assert start.extra["conversation_id"] == conversation
    (plain,) = started().feed_text(START)
    assert "conversation_id" not in plain.extra
    # Not a Conversation SID: the call goes on, keyed by its number, and the operator is told why.
    bad = START.replace('"called": "+15550100"', '"called": "+15550100", "ConversationSid": "../../x"')
    (start,) = started().feed_text(bad)
    assert "conversation_id" not in start.extra
    assert "ignored customParameters.ConversationSid" in caplog.text
