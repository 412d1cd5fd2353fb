"""Drain waiting logic on an injected clock and ESL answers (no sockets, no real time)."""

from __future__ import annotations

import pytest

from dispatcher.control import DrainTimeout, EdgeControl, NoEslPassword, WorkerStatus
from dispatcher.esl import WorkerUnreachable
from dispatcher.settings import DispatcherSettings


class Script:
    """Answers `show calls count` from a script: ints are counts, exceptions are raised."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int, str]] = []

    async def __call__(self, host: str, port: int, password: str, *, io_timeout: float) -> int:
        self.asked.append((host, port, password))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0  # every poll takes "one second"
        return self.now


def control(script: Script, **settings: object) -> EdgeControl:
    settings.setdefault("esl_password", "unit-test-secret")
    return EdgeControl(DispatcherSettings(poll_interval=0.001, **settings), rpc=None, count_calls=script)  # type: ignore[arg-type]


def worker(**attrs: str) -> WorkerStatus:
    return WorkerStatus(duid="fs1", uri="sip:10.0.0.11:5080", setid=1, flags="DX", attrs=attrs)


async def test_wait_drained_reports_each_count_until_zero() -> None:
    seen: list[tuple[int | None, str | None]] = []
    script = Script(3, 3, 1, 0)
    left = await control(script).wait_drained(worker(), 60, lambda c, _t, e: seen.append((c, e)),
                                              clock=Clock())
    assert left == 0
    assert seen == [(3, None), (3, None), (1, None), (0, None)]


async def test_a_blip_while_draining_is_retried_but_unreachable_at_start_is_an_error() -> None:
    seen: list[tuple[int | None, str | None]] = []
    script = Script(2, WorkerUnreachable("ESL 10.0.0.11:8021: reset"), 0)
    assert await control(script).wait_drained(worker(), 60, lambda c, _t, e: seen.append((c, e)),
                                              clock=Clock()) == 0
    assert seen[1][1] == "ESL 10.0.0.11:8021: reset"
    with pytest.raises(WorkerUnreachable):
        await control(Script(WorkerUnreachable("refused"))).wait_drained(worker(), 60, clock=Clock())


async def test_timeout_names_the_calls_left() -> None:
    with pytest.raises(DrainTimeout, match="fs1: still 2 call"):
        await control(Script(5, 4, 2, 2, 2)).wait_drained(worker(), 3, clock=Clock())


async def test_esl_address_comes_from_settings_then_attrs_then_the_uri() -> None:
    script = Script(0, 0, 0)
    ctl = control(script, esl_workers={"fs1": "192.0.2.5:9021:s3cret"}, esl_password="pw")
    await ctl.count_calls(worker())
    ctl = control(script, esl_password="pw")
    await ctl.count_calls(worker(esl="10.0.0.99:8022"))
    await ctl.count_calls(worker())
    assert script.asked == [("192.0.2.5", 9021, "s3cret"), ("10.0.0.99", 8022, "pw"),
                            ("10.0.0.11", 8021, "pw")]


@pytest.mark.parametrize("password", ["", "ClueCon", "change-me"])
async def test_no_esl_password_or_a_placeholder_is_refused_before_any_connection(password: str,
                                                                                  monkeypatch) -> None:
    monkeypatch.delenv("DISPATCHER_ESL_PASSWORD", raising=False)
    script = Script(0)
    ctl = control(script, esl_password=password)
    with pytest.raises(NoEslPassword, match="DISPATCHER_ESL_PASSWORD"):
        await ctl.count_calls(worker())
    # Nothing was sent to the worker: no guess at FreeSWITCH's stock password.
    assert script.asked == []


def test_rpc_address_defaults_to_the_unix_socket_and_rejects_other_schemes() -> None:
    assert DispatcherSettings().rpc_url == "unix:/run/kamailio/kamailio_rpc.sock"
    with pytest.raises(ValueError, match="unix:/path"):
        DispatcherSettings(rpc_url="ftp://10.0.0.2/RPC")
