"""mod_audio_stream wire core: the real metadata frames, rates, frame limits, playback messages."""

import base64
import json
from pathlib import Path

import pytest

from gateway.client.wsframe import FrameParser
from gateway.proto import audio_stream as wire

FIXTURES = Path("/work/shared/fixtures")


def _unmask(frame: bytes) -> bytes:
    n = frame[1] & 0x7F
    pos = 2 if n < 126 else 4
    if n == 126:
        n = int.from_bytes(frame[2:4], "big")
    key = frame[pos : pos + 4]
    data = frame[pos + 4 : pos + 4 + n]
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


@pytest.mark.parametrize("name", ["ws_upstream_mono8k", "ws_voxcom_mono16k", "ws_voxcom_hangup8k"])
def test_real_metadata_frames_parse(name):
    raw = (FIXTURES / f"{name}_first_text_frame.bin").read_bytes()
    assert raw[0] == 0x81  # FIN + text, as captured
    meta = wire.parse_metadata(_unmask(raw))
    assert meta.rate in (8000, 16000)  # the module's "8k" / "16k" spelling is understood
    assert "fixture" in meta.extra


def test_contract_metadata_fields():
    meta = wire.parse_metadata(json.dumps({"caller": "+4930123", "callee": "1000", "call_id": "CA123",
                                           "worker": "fs1", "profile": "front-desk", "rate": 16000}))
    assert (meta.caller, meta.callee, meta.call_id, meta.worker, meta.profile, meta.rate) == (
        "+4930123", "1000", "CA123", "fs1", "front-desk", 16000)


@pytest.mark.parametrize("text,code", [
    ("{not json", wire.CLOSE_INVALID_PAYLOAD),
    ("[1,2]", wire.CLOSE_INVALID_PAYLOAD),
    ('{"rate": 11025}', wire.CLOSE_UNSUPPORTED_DATA),
    ('{"rate": "44k"}', wire.CLOSE_UNSUPPORTED_DATA),
    ('{"caller": {"x": 1}}', wire.CLOSE_INVALID_PAYLOAD),
    ('{"pad": "' + "x" * 9000 + '"}', wire.CLOSE_TOO_BIG),
])
def test_bad_metadata_is_refused_with_a_close_code(text, code):
    with pytest.raises(wire.StreamProtocolError) as err:
        wire.parse_metadata(text)
    assert err.value.close_code == code


def test_audio_frames_of_any_even_length_up_to_a_second_are_accepted():
    for n in (2, 320, 640, 1000, 16000):
        wire.check_audio_frame(b"\0" * n, 8000)


def test_odd_and_oversized_frames_are_refused():
    with pytest.raises(wire.StreamProtocolError) as err:
        wire.check_audio_frame(b"\0" * 321, 8000)
    assert err.value.close_code == wire.CLOSE_INVALID_PAYLOAD
    with pytest.raises(wire.StreamProtocolError) as err:
        wire.check_audio_frame(b"\0" * 16002, 8000)
    assert err.value.close_code == wire.CLOSE_TOO_BIG


def test_stream_audio_message_is_what_the_module_parses():
    pcm = bytes(range(256)) * 2
    msg = json.loads(wire.build_stream_audio(pcm, 16000))
    assert msg == {"type": "streamAudio", "data": {"audioDataType": "raw", "sampleRate": 16000,
                                                   "audioData": base64.b64encode(pcm).decode()}}
    assert wire.parse_stream_audio(wire.build_stream_audio(pcm, 8000)) == (8000, pcm)


def test_captured_frames_parse_with_the_client_frame_parser():
    # The module's close after `uuid_kill`: 1000 "Normal closure", masked.
    raw = (FIXTURES / "ws_voxcom_hangup8k_after_hangup.bin").read_bytes()
    frames = FrameParser.__new__(FrameParser)
    frames.__init__()
    payload = _unmask(raw)
    assert int.from_bytes(payload[:2], "big") == 1000 and payload[2:] == b"Normal closure"


def test_channel_uuid_in_url_is_checked():
    assert wire.check_stream_id("5d7a3f7e-1b2c-4d5e-8f90-a1b2c3d4e5f6")
    with pytest.raises(wire.StreamProtocolError):
        wire.check_stream_id("../../etc/passwd")
