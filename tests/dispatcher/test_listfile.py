"""The dispatcher list and the ESL call count are parsed exactly; bad input is refused with a reason."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dispatcher.control import worker_from_dest
from dispatcher.esl import parse_calls_count
from dispatcher.listfile import (
    Entry,
    ListError,
    parse_list,
    parse_uri,
    read_list,
    write_list_atomically,
)

REPO = Path(__file__).resolve().parents[2]
# The captured FreeSWITCH bytes live with the ESL fake (tests/fakes/fixtures, copied from the capture).
FIXTURES = REPO / "tests" / "fakes" / "fixtures"

SAMPLE = """# header Ansible wrote
# setid uri flags priority attrs

1 sip:10.0.0.11:5080 8 0 duid=fs1;maxload=400;esl=10.0.0.11:8021
1 sip:10.0.0.12:5080 12 5 duid=fs2
2 sip:10.9.9.9 8
"""


def test_round_trip_keeps_comments_blank_lines_and_order() -> None:
    assert parse_list(SAMPLE).render() == SAMPLE


def test_the_example_list_in_the_repository_parses() -> None:
    dlist = read_list(REPO / "kamailio-conf" / "dispatcher.list")
    assert [e.duid for e in dlist.entries] == ["fs1", "fs2"]
    assert all(e.flags == 8 for e in dlist.entries)


def test_find_by_duid_uri_or_hostport_within_the_set() -> None:
    dlist = parse_list(SAMPLE)
    fs1 = dlist.entries[0]
    assert dlist.find(1, "fs1") is fs1
    assert dlist.find(1, "sip:10.0.0.11:5080") is fs1
    assert dlist.find(1, "10.0.0.11:5080") is fs1
    assert dlist.find(1, "10.9.9.9:5060") is None  # set 2 only
    assert dlist.find(2, "10.9.9.9:5060") is dlist.entries[2]


def test_add_refuses_duplicates_and_missing_ids() -> None:
    dlist = parse_list(SAMPLE)
    with pytest.raises(ListError, match="already in set 1"):
        dlist.add(Entry(1, "sip:10.0.0.99:5080", attrs={"duid": "fs1"}))
    with pytest.raises(ListError, match="already in set 1 as 'fs2'"):
        dlist.add(Entry(1, "sip:10.0.0.12:5080", attrs={"duid": "fs9"}))
    with pytest.raises(ListError, match="needs a duid"):
        dlist.add(Entry(1, "sip:10.0.0.13:5080"))
    dlist.add(Entry(1, "sip:10.0.0.13:5080", attrs={"duid": "fs3", "maxload": "10"}))
    assert dlist.render().endswith("1 sip:10.0.0.13:5080 8 0 duid=fs3;maxload=10\n")


@pytest.mark.parametrize("uri, reason", [
    ("http://10.0.0.1", "expected sip:host"),
    ("sip:user@10.0.0.1", "expected sip:host"),
    ("sip:10.0.0.1:70000", "out of range"),
    ("sip:10.0.0.1;transport=carrier-pigeon", "unknown transport"),
    ("sip:300.1.1.1", "neither an IP address nor a hostname"),
    ("sip:fs 1", "neither an IP address nor a hostname"),
    (" sip:10.0.0.1", "expected sip:host"),
    ("sip:10.0.0.1;maddr=1.2.3.4", "unexpected parameter"),
])
def test_invalid_worker_uris_are_refused_with_the_reason(uri: str, reason: str) -> None:
    with pytest.raises(ListError, match=reason):
        parse_uri(uri)


def test_valid_worker_uris() -> None:
    assert parse_uri("sip:fs1.internal:5080;transport=tcp").transport == "tcp"
    assert parse_uri("sip:[2001:db8::1]:5080").host == "2001:db8::1"
    assert parse_uri("sip:10.0.0.1").port == 5060


@pytest.mark.parametrize("line", ["1", "x sip:10.0.0.1 8", "1 sip:10.0.0.1 8 0 duid=a b",
                                  "1 sip:10.0.0.1 eight", "1 sip:user@10.0.0.1 8",
                                  "1 sip:10.0.0.1 8 0 duid=fs1 extra"])
def test_bad_list_lines_are_refused_with_the_line_number(line: str) -> None:
    with pytest.raises(ListError, match="line 2"):
        parse_list("# header\n" + line + "\n")


def test_atomic_write_replaces_the_file_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "dispatcher.list"
    path.write_text(SAMPLE)
    path.chmod(0o640)
    dlist = read_list(path)
    dlist.remove(dlist.entries[1])
    write_list_atomically(path, dlist)
    assert "fs2" not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["dispatcher.list"]  # no temp file left behind


def test_show_calls_count_parsed_from_real_freeswitch_bytes() -> None:
    if not (FIXTURES / "api_show_calls_count.txt").exists():
        pytest.skip("FreeSWITCH fixtures not in this checkout")
    assert parse_calls_count((FIXTURES / "api_show_calls_count.txt").read_text()) == 2
    assert parse_calls_count((FIXTURES / "api_show_calls_count_empty.txt").read_text()) == 0
    for bad in ("-ERR no reply\n", "", "two total.\n", "\n2 total.\n3 total.\n"):
        with pytest.raises(ValueError, match="unexpected"):
            parse_calls_count(bad)


def test_worker_status_from_the_kamailio_rpc_shape() -> None:
    dest = {"URI": "sip:127.0.0.11:5080", "FLAGS": "DX", "PRIORITY": 0, "SETID": 1,
            "ATTRS": {"BODY": "duid=fs1;esl=127.0.0.11:8021;maxload=5", "DUID": "fs1", "MAXLOAD": 5},
            "RUNTIME": {"DLGLOAD": 3}}
    w = worker_from_dest(dest)
    assert (w.name, w.state, w.probing, w.load) == ("fs1", "disabled", False, 3)
    assert w.attrs["esl"] == "127.0.0.11:8021"
