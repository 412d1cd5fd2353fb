"""The sans-I/O ESL parser against real FreeSWITCH 1.10.12 bytes, whole and split at every offset."""

from __future__ import annotations

import json
from urllib.parse import unquote

import pytest
from fakes.freeswitch_esl import (
    FIXTURES,
    frame_event,
    read_fixture,
    serialize_json,
    serialize_plain,
    split_frames,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.esl import protocol
from gateway.esl.errors import (
    EslArgumentError,
    EslFrameTooLarge,
    EslHeaderTooLarge,
    EslMalformedFrame,
    EslProtocolError,
)
from gateway.esl.protocol import (
    ApiResponse,
    AuthRequest,
    CommandReply,
    DisconnectNotice,
    EslParser,
    Event,
    InvalidEvent,
    LogData,
    RudeRejection,
)

SESSIONS = sorted(p.name for p in FIXTURES.glob("esl_*.fs.bin"))
CALL_UUID = {"upstream": None}  # filled lazily below


def parse_whole(data: bytes) -> list[protocol.EslMessage]:
    return EslParser().feed(data)


def parse_split(data: bytes, cut: int) -> list[protocol.EslMessage]:
    parser = EslParser()
    return parser.feed(data[:cut]) + parser.feed(data[cut:])


@pytest.mark.parametrize("name", SESSIONS)
def test_every_split_point_gives_the_same_messages(name: str) -> None:
    data = read_fixture(name)
    whole = parse_whole(data)
    assert whole, "fixture produced no messages"
    for cut in range(len(data) + 1):
        assert parse_split(data, cut) == whole, f"split at byte {cut} changed the result"


@pytest.mark.parametrize("name", SESSIONS)
def test_byte_by_byte_feed_gives_the_same_messages(name: str) -> None:
    data = read_fixture(name)
    parser = EslParser()
    out: list[protocol.EslMessage] = []
    for i in range(len(data)):
        out += parser.feed(data[i : i + 1])
    assert out == parse_whole(data)
    assert parser.buffered == 0


@pytest.mark.parametrize("name", SESSIONS)
def test_recorded_chunk_boundaries_give_the_same_messages(name: str) -> None:
    # esl_timelines.json records how FreeSWITCH's bytes actually arrived (recv() sizes).
    timeline = json.loads(read_fixture("esl_timelines.json"))
    session = name.removesuffix(".fs.bin")
    if session not in timeline:
        pytest.skip("no timeline for this session")
    data = read_fixture(name)
    parser, pos, out = EslParser(), 0, []
    for _, direction, size in timeline[session]:
        if direction == "S>C":
            out += parser.feed(data[pos : pos + size])
            pos += size
    assert pos == len(data)
    assert out == parse_whole(data)


def test_auth_accept_bye_and_disconnect_notice() -> None:
    msgs = parse_whole(read_fixture("esl_auth_exit.fs.bin"))
    assert msgs[0] == AuthRequest()
    assert isinstance(msgs[1], CommandReply) and msgs[1].ok and msgs[1].reply_text == "+OK accepted"
    assert msgs[2].reply_text == "+OK bye"
    assert isinstance(msgs[3], DisconnectNotice)
    assert msgs[3].body == "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"


def test_auth_failure_is_an_error_reply() -> None:
    msgs = parse_whole(read_fixture("esl_auth_fail.fs.bin"))
    assert isinstance(msgs[1], CommandReply) and not msgs[1].ok
    assert msgs[1].reply_text == "-ERR invalid"
    assert isinstance(msgs[2], DisconnectNotice)


def test_api_response_body_is_counted_in_bytes() -> None:
    msgs = parse_whole(read_fixture("esl_api_status.fs.bin"))
    assert isinstance(msgs[2], ApiResponse)
    assert len(msgs[2].body.encode()) == 337  # the frame's Content-Length
    assert msgs[2].body.startswith("UP 0 years") and msgs[2].body.endswith("240K/8192K\n")


def test_api_error_reply_is_not_ok() -> None:
    msgs = parse_whole(read_fixture("esl_api_uuid_kill_bad.fs.bin"))
    assert msgs[2] == ApiResponse(body="-ERR No such channel!\n")
    assert not msgs[2].ok


def test_bgapi_reply_and_plain_background_job() -> None:
    msgs = parse_whole(read_fixture("esl_bgapi_status.fs.bin"))
    reply, job = msgs[3], msgs[4]
    assert isinstance(reply, CommandReply) and reply.ok
    assert reply.job_uuid == "b45d363c-76f4-46be-9008-7ed9707b26c8"
    assert isinstance(job, Event) and job.format == "plain"
    assert job.name == "BACKGROUND_JOB" and job.job_uuid == reply.job_uuid
    assert job.get("FreeSWITCH-IPv6") == "::1"  # percent-decoded
    assert job.get("Event-Date-GMT") == "Sat, 21 Nov 2026 05:56:59 GMT"
    assert job.body is not None and len(job.body.encode()) == 337  # the inner Content-Length
    assert job.body.startswith("UP 0 years") and job.body.endswith("240K/8192K\n")


def test_bgapi_with_our_job_uuid_and_json_background_job() -> None:
    msgs = parse_whole(read_fixture("esl_bgapi_jobuuid_json.fs.bin"))
    assert msgs[3].job_uuid == "11111111-2222-4333-8444-555555555555"
    job = msgs[4]
    assert isinstance(job, Event) and job.format == "json"
    assert job.job_uuid == "11111111-2222-4333-8444-555555555555"
    assert job.body == "-ERR No such channel!\n"
    assert job.get("Job-Command-Arg") == "00000000-0000-4000-8000-000000000000"
    assert "_body" not in job.headers


def test_filter_replies_keep_their_exact_text() -> None:
    msgs = parse_whole(read_fixture("esl_filter.fs.bin"))
    texts = [m.reply_text for m in msgs[1:]]
    assert texts == [
        "+OK accepted",
        "+OK filter added. [Unique-ID]=[00000000-0000-4000-8000-000000000000]",
        "+OK filter deleted. [Unique-ID][00000000-0000-4000-8000-000000000000]",
        "-ERR not listening for events",
    ]


def test_log_data_frame() -> None:
    msgs = parse_whole(read_fixture("esl_log.fs.bin"))
    logs = [m for m in msgs if isinstance(m, LogData)]
    assert len(logs) == 1
    assert logs[0].headers["Log-Level"] == "5" and logs[0].headers["User-Data"] == ""
    assert logs[0].body.endswith("[NOTICE] mod_commands.c:7200 fsfix log line for parser tests\n")
    assert msgs[-1].reply_text == "+OK no longer logging"


@pytest.mark.parametrize("variant", ["upstream", "voxcom"])
@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_call_events_plain_and_json_are_identical(variant: str, fmt: str) -> None:
    events = [
        m
        for m in parse_whole(read_fixture(f"esl_events_{fmt}_call_{variant}.fs.bin"))
        if isinstance(m, Event)
    ]
    names = [(e.name, e.subclass) for e in events]
    assert names == [
        ("CHANNEL_CREATE", None),
        ("CHANNEL_ANSWER", None),
        ("CUSTOM", "mod_audio_stream::connect"),
        ("CUSTOM", "mod_audio_stream::json"),
        ("CUSTOM", "mod_audio_stream::disconnect"),
        ("CHANNEL_HANGUP_COMPLETE", None),
    ]
    assert len({e.unique_id for e in events}) == 1
    assert events[2].json_body() == {"status": "connected"}
    assert events[3].json_body() == {"type": "fixture", "seq": 1, "note": "hello from test server"}
    assert events[4].json_body() == {"status": "disconnected", "message": {"code": 1000, "reason": "bye"}}
    assert events[5].get("Hangup-Cause") == "NORMAL_CLEARING"
    assert events[0].get("Channel-Name") == "loopback/m:^:answer^park-a"


@pytest.mark.parametrize("variant", ["upstream", "voxcom"])
def test_plain_and_json_captures_decode_to_the_same_headers(variant: str) -> None:
    plain = [
        m
        for m in parse_whole(read_fixture(f"esl_events_plain_call_{variant}.fs.bin"))
        if isinstance(m, Event)
    ]
    js = [
        m for m in parse_whole(read_fixture(f"esl_events_json_call_{variant}.fs.bin")) if isinstance(m, Event)
    ]
    stable = (
        "Event-Name",
        "Event-Subclass",
        "Channel-Name",
        "Caller-Destination-Number",
        "Answer-State",
        "Channel-State",
        "FreeSWITCH-IPv6",
        "Caller-Callee-ID-Name",
        "Event-Date-GMT",
        "Hangup-Cause",
    )
    for p, j in zip(plain, js, strict=True):
        # The two captures are different calls: same header names, same bodies, same stable values;
        # in particular percent-decoding the plain capture yields the JSON capture's raw strings.
        assert p.body == j.body
        assert set(p.headers) == set(j.headers)
        for key in stable:
            if key == "Event-Date-GMT":
                assert p.get(key, "").endswith(" GMT") and j.get(key, "").endswith(" GMT")
            else:
                assert p.get(key) == j.get(key), key


def test_plain_values_are_decoded_after_splitting_lines() -> None:
    # An encoded %0A must stay inside its value, not become a header boundary.
    body = b"Event-Name: CUSTOM\nX-Note: one%0ATwo%3A%20three\nEvent-Subclass: a%3A%3Ab\n\n"
    frame = b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(body) + body
    (event,) = parse_whole(frame)
    assert event.get("X-Note") == "one\nTwo: three"
    assert event.subclass == "a::b" and event.body is None


def test_multibyte_body_is_counted_in_bytes_across_a_split() -> None:
    text = "caf\u00e9 \u2603 \U0001f600"
    raw = text.encode()
    frame = (
        b"Content-Type: api/response\nContent-Length: %d\n\n" % len(raw)
        + raw
        + b"Content-Type: auth/request\n\n"
    )
    whole = parse_whole(frame)
    assert whole == [ApiResponse(body=text), AuthRequest()]
    for cut in range(len(frame) + 1):
        assert parse_split(frame, cut) == whole


def test_invalid_json_event_is_refused_without_losing_the_stream() -> None:
    bad = b"{not json"
    frame = b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(bad) + bad
    msgs = parse_whole(frame + b"Content-Type: auth/request\n\n")
    assert isinstance(msgs[0], InvalidEvent) and msgs[0].raw == bad
    assert msgs[1] == AuthRequest()


def test_plain_event_with_overlong_inner_length_is_refused() -> None:
    body = b"Event-Name: CUSTOM\nContent-Length: 99\n\nshort"
    frame = b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(body) + body
    (msg,) = parse_whole(frame)
    assert isinstance(msg, InvalidEvent)


def test_rude_rejection() -> None:
    frame = b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n"
    assert parse_whole(frame) == [RudeRejection(body="Access Denied, go away.\n")]


def test_header_block_limit() -> None:
    parser = EslParser()
    with pytest.raises(EslHeaderTooLarge):
        parser.feed(b"X-Filler: " + b"a" * (protocol.MAX_HEADER_BYTES + 10))
    with pytest.raises(EslMalformedFrame):  # the parser stays failed: the framing is lost
        parser.feed(b"Content-Type: auth/request\n\n")


def test_frame_size_limit() -> None:
    with pytest.raises(EslFrameTooLarge):
        EslParser().feed(
            b"Content-Type: api/response\nContent-Length: %d\n\n" % (protocol.MAX_FRAME_BYTES + 1)
        )


@pytest.mark.parametrize("value", [b"-1", b"12a", b"", b"0x10", b" "])
def test_content_length_must_be_a_byte_count(value: bytes) -> None:
    with pytest.raises(EslMalformedFrame):
        EslParser().feed(b"Content-Type: api/response\nContent-Length: " + value + b"\n\n")


def test_header_line_without_colon_is_malformed() -> None:
    with pytest.raises(EslMalformedFrame):
        EslParser().feed(b"Content-Type: command/reply\ngarbage line\n\n")


# ------------------------------------------------------------------------------------- builders


def test_builders_produce_the_captured_client_bytes() -> None:
    assert protocol.auth("ClueCon") + protocol.exit_() == read_fixture("esl_auth_exit.client.bin")
    assert protocol.auth("ClueCon") + protocol.event("plain", ["BACKGROUND_JOB"]) + protocol.bgapi(
        "status"
    ) == read_fixture("esl_bgapi_status.client.bin")
    assert protocol.auth("ClueCon") + protocol.event("json", ["BACKGROUND_JOB"]) + protocol.bgapi(
        "uuid_kill 00000000-0000-4000-8000-000000000000", "11111111-2222-4333-8444-555555555555"
    ) == read_fixture("esl_bgapi_jobuuid_json.client.bin")
    uid = "00000000-0000-4000-8000-000000000000"
    assert protocol.auth("ClueCon") + protocol.filter_add("Unique-ID", uid) + protocol.filter_delete(
        "Unique-ID", uid
    ) + protocol.noevents() == read_fixture("esl_filter.client.bin")
    assert protocol.auth("ClueCon") + protocol.log(6) + protocol.api(
        "log NOTICE fsfix log line for parser tests"
    ) + protocol.nolog() == read_fixture("esl_log.client.bin")
    call = read_fixture("esl_events_plain_call_upstream.client.bin")
    expected = protocol.auth("ClueCon") + protocol.event(
        "plain",
        ["CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP_COMPLETE"],
        ["mod_audio_stream::connect", "mod_audio_stream::disconnect", "mod_audio_stream::json"],
    )
    assert call.startswith(expected)


@pytest.mark.parametrize("bad", ["status\n\napi uuid_kill x", "status\r", "x\x00"])
def test_builders_refuse_command_injection(bad: str) -> None:
    with pytest.raises(EslArgumentError):
        protocol.api(bad)
    with pytest.raises(EslArgumentError):
        protocol.bgapi(bad)


def test_event_builder_refuses_odd_names() -> None:
    with pytest.raises(EslArgumentError):
        protocol.event("plain", ["CHANNEL_ANSWER BACKGROUND_JOB\n"])
    with pytest.raises(EslArgumentError):
        protocol.event("yaml", ["CHANNEL_ANSWER"])


# ------------------------------------------------------------------- the fake's serialisers


@pytest.mark.parametrize("name", [p.name for p in FIXTURES.glob("esl_*json*.fs.bin")])
def test_json_event_serialiser_reproduces_captured_frames(name: str) -> None:
    for frame in split_frames(read_fixture(name)):
        if b"text/event-json" not in frame.split(b"\n\n", 1)[0]:
            continue
        pairs = json.loads(frame.split(b"\n\n", 1)[1], object_pairs_hook=list)
        body = dict(pairs).get("_body")
        if body is not None:
            pairs = [(k, v) for k, v in pairs if k not in ("_body", "Content-Length")]
        assert frame_event("json", pairs, body) == frame
        assert serialize_json(pairs, body) == frame.split(b"\n\n", 1)[1]


@pytest.mark.parametrize(
    "name", [p.name for p in FIXTURES.glob("esl_*.fs.bin") if b"event-plain" in p.read_bytes()]
)
def test_plain_event_serialiser_reproduces_captured_frames(name: str) -> None:
    count = 0
    for frame in split_frames(read_fixture(name)):
        if b"text/event-plain" not in frame.split(b"\n\n", 1)[0]:
            continue
        (event,) = parse_whole(frame)
        # Header pairs in wire order, repeats kept (the parsed Event keeps the last of a repeat).
        block = frame.split(b"\n\n", 2)[1].decode()
        pairs = [
            (k, unquote(v))
            for k, _, v in (line.partition(": ") for line in block.split("\n"))
            if k != "Content-Length"
        ]
        assert frame_event("plain", pairs, event.body) == frame
        assert serialize_plain(pairs, event.body) == frame.split(b"\n\n", 1)[1]
        count += 1
    assert count


# ------------------------------------------------------------------------- hostile and random input

ALL_BYTES = b"".join(read_fixture(n) for n in SESSIONS)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(ALL_BYTES)), max_size=40))
def test_any_chunking_of_all_sessions_gives_the_same_messages(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    parser, out, prev = EslParser(), [], 0
    for point in [*points, len(ALL_BYTES)]:
        out += parser.feed(ALL_BYTES[prev:point])
        prev = point
    assert out == parse_whole(ALL_BYTES)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_only_ever_raise_protocol_errors(data: bytes) -> None:
    try:
        EslParser().feed(data)
    except EslProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SESSIONS), st.data())
def test_corrupted_captures_only_ever_raise_protocol_errors(name: str, data: st.DataObject) -> None:
    raw = bytearray(read_fixture(name))
    for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
        raw[data.draw(st.integers(min_value=0, max_value=len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        EslParser().feed(bytes(raw))
    except EslProtocolError:
        pass
