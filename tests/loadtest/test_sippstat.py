"""Parsers for SIPp's own files: the research samples (TABs inside dates) and fresh real output."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.sippstat import (
    StatFormatError,
    parse_duration,
    parse_rtt_csv,
    parse_stat_csv,
    percentile,
    summarize_errors,
)

ARTIFACTS = Path("/work/shared/research/artifacts")
SAMPLE_STAT = ARTIFACTS / "sipp_50cps_uac_stat.csv"
SAMPLE_RTT = ARTIFACTS / "sipp_50cps_uac_rtt.csv"


@pytest.fixture
def sample_stat() -> str:
    if not SAMPLE_STAT.exists():
        pytest.skip("research sample not present on this machine")
    return SAMPLE_STAT.read_text()


def test_research_sample_with_tabs_inside_dates_parses_to_the_published_counts(sample_stat):
    # research §2.8: 250 outgoing, 250 successful, 0 failed, 0 retransmissions, 8 data rows,
    # TargetRate 50, CallLength(C) 00:00:01:005000; dates look like "2026-11-21\t05:37:33.327019\t<epoch>"
    assert "\t" in sample_stat.splitlines()[1]
    stat = parse_stat_csv(sample_stat)
    assert len(stat.columns) == 95
    assert len(stat.rows) == 8 and stat.skipped_lines == 0
    final = stat.final
    assert (final.outgoing_c, final.successful_c, final.failed_c, final.retransmissions_c) == (250, 250, 0, 0)
    assert final.target_rate == 50
    assert final.call_length_c == pytest.approx(1.005)
    assert final.start_time == pytest.approx(1795239453.327019)
    assert final.current_time - final.start_time == pytest.approx(6.010556, abs=1e-6)
    # repartition: the label column is empty, each bucket has its own column
    assert [b.upper_ms for b in final.response_time_buckets] == [10, 20, 30, 40, 50, 100, 150, 200, None]
    assert sum(b.count for b in final.response_time_buckets) == 250
    used = [(b.lower_ms, b.upper_ms, b.count) for b in final.call_length_buckets if b.count]
    assert used == [(1000, 5000, 250)]


def test_research_rtt_sample_has_one_sample_per_call():
    if not SAMPLE_RTT.exists():
        pytest.skip("research sample not present on this machine")
    samples, skipped = parse_rtt_csv(SAMPLE_RTT.read_text())
    assert len(samples) == 250 and skipped == 0
    assert samples[0].at_ms == pytest.approx(24.001) and samples[0].rtd == 1


def test_a_truncated_last_line_is_skipped_not_fatal(sample_stat):
    cut = sample_stat.rstrip("\n")
    cut = cut[: len(cut) - 40]  # a run killed while sipp was writing its last row
    stat = parse_stat_csv(cut)
    assert len(stat.rows) == 7 and stat.skipped_lines == 1


def test_a_file_that_is_not_a_stat_file_is_refused():
    with pytest.raises(StatFormatError):
        parse_stat_csv("Date_ms;response_time_ms;rtd_no\n1;2;1\n")
    with pytest.raises(StatFormatError):
        parse_stat_csv("")


def test_durations_and_percentiles():
    assert parse_duration("00:00:01:005000") == pytest.approx(1.005)
    assert parse_duration("01:02:03") == 3723
    with pytest.raises(ValueError):
        parse_duration("1.5s")
    assert percentile([], 95) is None
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50, 95, 99)
    assert percentile([7.0], 99) == 7.0


def test_error_log_events_are_counted_by_kind():
    text = (
        "2026-11-21\t06:47:57.343743\t1795243677.343743: Aborting call on unexpected message for Call-Id "
        "'1-15155@127.0.0.1': while expecting '180' (index 3), received 'SIP/2.0 503 Service Unavailable\n"
        "Via: SIP/2.0/UDP 127.0.0.1:25193;branch=z9hG4bK-15155-1-1\n"
        "2026-11-21\t06:47:58.343743\t1795243678.343743: Aborting call on unexpected message for Call-Id "
        "'2-15155@127.0.0.1': while expecting '180' (index 3), received 'SIP/2.0 503 Service Unavailable\n"
    )
    assert summarize_errors(text) == {"unexpected SIP/2.0 503 Service Unavailable": 2}
