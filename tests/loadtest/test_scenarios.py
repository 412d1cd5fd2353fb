"""The shipped SIPp scenarios: well-formed, and each pair completes against real sipp on loopback."""

from __future__ import annotations

import socket
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from lt_helpers import TEST_SCENARIOS, run_uac

from loadtest import SCENARIO_DIR
from loadtest.sippstat import parse_stat_csv, summarize_errors

pytestmark = pytest.mark.slow
SHIPPED = sorted(SCENARIO_DIR.glob("*.xml"))
CALLERS = SCENARIO_DIR / "callers.csv"


def final_row(workdir: Path):
    return parse_stat_csv((workdir / "stat.csv").read_text()).final


def test_every_shipped_scenario_is_a_named_sipp_scenario():
    assert {p.stem for p in SHIPPED} >= {
        "uac-speech-expect-200", "uac-cancel-while-ringing", "uac-options-ping-expect-200",
        "uac-register-expect-403", "uas-worker-echo", "uas-worker-503", "uas-worker-ringing-until-cancel"}
    for path in SHIPPED:
        root = ET.parse(path).getroot()
        assert root.tag == "scenario"
        assert root.get("name") == path.stem, f"{path.name}: scenario name must match the file name"
        assert root.find("ResponseTimeRepartition") is not None, path.name


def _sends(name: str) -> list[str]:
    root = ET.parse(SCENARIO_DIR / f"{name}.xml").getroot()
    return [(el.text or "").strip() for el in root.iter("send")]


def test_callers_save_the_route_set_and_workers_echo_record_route():
    # Behind the Kamailio edge the worker must copy Record-Route and the caller must route ACK/BYE
    # with it (research: the built-in uac/uas pair fails every BYE with 404 through a proxy).
    root = ET.parse(SCENARIO_DIR / "uac-speech-expect-200.xml").getroot()
    assert [r.get("rrs") for r in root.iter("recv") if r.get("response") == "200"][0] == "true"
    in_dialog = [m for m in _sends("uac-speech-expect-200") if m.startswith(("ACK", "BYE"))]
    assert len(in_dialog) == 2
    assert all(m.split()[1] == "[next_url]" and "[routes]" in m for m in in_dialog)
    for name in ("uas-worker-echo", "uas-worker-ringing-until-cancel"):
        # dialog-forming responses: 180 and the 2xx with SDP (not the 200 to CANCEL)
        forming = [m for m in _sends(name) if m.startswith("SIP/2.0 180") or "application/sdp" in m]
        assert forming and all("[last_Record-Route:]" in m for m in forming), name


def test_speech_caller_completes_every_call_against_the_echo_worker(start_uas, speech_dir, tmp_path):
    uas = start_uas("uas-worker-echo")
    work = tmp_path / "uac"
    work.mkdir()
    (work / "question.ulaw").write_bytes((speech_dir / "question.ulaw").read_bytes())
    done = run_uac(work, uas.target, "uac-speech-expect-200", "-inf", str(CALLERS),
                   "-r", "5", "-m", "4", "-d", "500")
    assert done.returncode == 0, done.stderr.decode()[-800:]
    row = final_row(work)
    assert (row.outgoing_c, row.successful_c, row.failed_c) == (4, 4, 0)


def test_speech_caller_sends_the_recorded_question_as_20ms_pcmu_packets(start_uas, speech_dir, tmp_path):
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(2.0)
    received: list[bytes] = []

    def collect() -> None:
        try:
            while True:
                received.append(sink.recv(2048))
        except OSError:
            pass

    reader = threading.Thread(target=collect)
    reader.start()
    try:
        uas = start_uas(TEST_SCENARIOS / "uas-answer-media-to-sink.xml",
                        "-key", "sink_port", str(sink.getsockname()[1]), rtp_echo=False)
        work = tmp_path / "uac"
        work.mkdir()
        audio = (speech_dir / "question.ulaw").read_bytes()
        (work / "question.ulaw").write_bytes(audio)
        # hold longer than the question so the whole recording goes out before the BYE
        hold_ms = len(audio) // 8 + 1000
        done = run_uac(work, uas.target, "uac-speech-expect-200", "-inf", str(CALLERS),
                       "-m", "1", "-d", str(hold_ms))
        assert done.returncode == 0, done.stderr.decode()[-800:]
    finally:
        reader.join(timeout=hold_ms / 1000 + 10)
        sink.close()
    assert received, "no RTP reached the worker's media address"
    assert {len(p) for p in received} == {12 + 160}      # RTP header + 20 ms of 8 kHz mu-law
    assert {p[1] & 0x7F for p in received} == {0}         # payload type 0 = PCMU
    # every 20 ms of the question exactly once, in order (the last partial chunk is padded)
    assert len(received) == -(-len(audio) // 160)
    assert b"".join(p[12:] for p in received)[: len(audio)] == audio


def test_echo_worker_returns_rtp_to_its_sender(start_uas):
    uas = start_uas("uas-worker-echo")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        packet = bytes([0x80, 0x00, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4]) + b"\xff" * 160
        s.sendto(packet, ("127.0.0.1", uas.media_port))
        echoed, _ = s.recvfrom(2048)
    assert echoed == packet


def test_hold_time_comes_from_the_csv_when_given(start_uas, speech_dir, tmp_path):
    uas = start_uas("uas-worker-echo")
    work = tmp_path / "uac"
    work.mkdir()
    (work / "question.ulaw").write_bytes((speech_dir / "question.ulaw").read_bytes())
    csv = tmp_path / "hold.csv"
    csv.write_text("SEQUENTIAL\n+14155550111;+18005550100;CA0001;2500\n")
    done = run_uac(work, uas.target, "uac-speech-expect-200", "-inf", str(csv), "-m", "1", "-d", "100")
    assert done.returncode == 0, done.stderr.decode()[-800:]
    # the call lasted the CSV's 2.5 s, not -d's 0.1 s
    assert 2.4 <= final_row(work).call_length_c < 5.0


def test_cancel_while_ringing_gets_487_from_a_ringing_worker(start_uas, tmp_path):
    uas = start_uas("uas-worker-ringing-until-cancel")
    work = tmp_path / "uac"
    done = run_uac(work, uas.target, "uac-cancel-while-ringing", "-inf", str(CALLERS),
                   "-r", "5", "-m", "3", "-d", "200")
    assert done.returncode == 0, done.stderr.decode()[-800:]
    row = final_row(work)
    assert (row.successful_c, row.failed_c) == (3, 0)


def test_speech_caller_fails_every_call_against_the_503_worker(start_uas, speech_dir, tmp_path):
    uas = start_uas("uas-worker-503")
    work = tmp_path / "uac"
    work.mkdir()
    (work / "question.ulaw").write_bytes((speech_dir / "question.ulaw").read_bytes())
    done = run_uac(work, uas.target, "uac-speech-expect-200", "-inf", str(CALLERS), "-r", "5", "-m", "3")
    assert done.returncode == 1                            # sipp: at least one call failed
    row = final_row(work)
    assert (row.successful_c, row.failed_c) == (0, 3)
    assert row.failures_c == {"FailedUnexpectedMessage": 3}
    errors = summarize_errors((work / "err.log").read_text())
    assert errors == {"unexpected SIP/2.0 503 Service Unavailable": 3}


def test_options_ping_is_answered_by_a_worker_with_auto_answer(start_uas, tmp_path):
    uas = start_uas("uas-worker-echo")  # started with -aa, like the edge's dispatcher targets
    work = tmp_path / "uac"
    done = run_uac(work, uas.target, "uac-options-ping-expect-200", "-r", "5", "-m", "3")
    assert done.returncode == 0, done.stderr.decode()[-800:]
    assert final_row(work).successful_c == 3


def test_register_probe_passes_on_403_and_fails_on_silence(start_uas, tmp_path):
    uas = start_uas(TEST_SCENARIOS / "uas-refuse-register-403.xml")
    done = run_uac(tmp_path / "ok", uas.target, "uac-register-expect-403", "-m", "2")
    assert done.returncode == 0, done.stderr.decode()[-800:]
    # nobody answering REGISTER must be a failure, not a pass
    silent = start_uas("uas-worker-echo")
    done = run_uac(tmp_path / "silent", silent.target, "uac-register-expect-403", "-m", "1",
                   "-recv_timeout", "1500", timeout=20)
    assert done.returncode == 1
