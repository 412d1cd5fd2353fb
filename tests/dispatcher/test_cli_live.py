"""`dispatcher` against a live Kamailio running the repository cfg, SIPp workers and the ESL fake."""

from __future__ import annotations

import asyncio
import json

import pytest
from kamailio_harness import (
    WORKER_IPS,
    SippUas,
    finish_uac,
    free_port,
    sipp_uac,
    stop_all,
)

from dispatcher.listfile import read_list
from dispatcher.rpc import KamailioRefused, KamailioRpc


async def test_status_shows_state_probing_and_calls_from_esl(cli_env, live_edge, run_cli, fake_fs) -> None:
    edge = live_edge(2, sipp=False)
    fs1 = await fake_fs(WORKER_IPS[0], calls=3)
    fs2 = await fake_fs(WORKER_IPS[1], calls=0)
    env = cli_env(edge, {"fs1": fs1.address, "fs2": fs2.address})
    run = await run_cli("status", "--json", env=env)
    assert run.returncode == 0, run.stderr
    workers = {w["duid"]: w for w in json.loads(run.stdout)["workers"]}
    assert workers["fs1"]["active_calls"] == 3
    assert workers["fs2"]["active_calls"] == 0
    assert workers["fs1"]["probing"] is True
    assert workers["fs1"]["uri"] == f"sip:{WORKER_IPS[0]}:5080"
    assert workers["fs1"]["esl"] == f"{WORKER_IPS[0]}:{fs1.port}"
    table = await run_cli("status", env=env)
    header = ["WORKER", "URI", "STATE", "PROBING", "FLAGS", "LOAD", "CALLS"]
    assert table.stdout.splitlines()[0].split() == header
    assert table.stdout.splitlines()[1].split()[0] == "fs1"


async def test_status_exits_4_and_names_the_worker_whose_esl_is_down(cli_env, live_edge, run_cli,
                                                                      fake_fs) -> None:
    edge = live_edge(2, sipp=False)
    fs1 = await fake_fs(WORKER_IPS[0], calls=1)
    # fs2's event socket: a port nobody listens on.
    fs2 = f"{WORKER_IPS[1]}:{free_port(WORKER_IPS[1])}:dispatch-test-secret"
    env = cli_env(edge, {"fs1": fs1.address, "fs2": fs2})
    run = await run_cli("status", env=env)
    assert run.returncode == 4
    assert "fs2" in run.stderr and "unreachable" in run.stdout
    assert "fs1" in run.stdout


async def test_unreachable_kamailio_is_exit_3_with_a_clear_message(run_cli, tmp_path) -> None:
    url = f"http://127.0.0.1:{free_port()}/RPC"
    env = {"DISPATCHER_RPC_URL": url, "DISPATCHER_LIST_FILE": str(tmp_path / "x")}
    run = await run_cli("status", env=env)
    assert run.returncode == 3
    assert f"Kamailio JSON-RPC at {url} is unreachable" in run.stderr
    assert "Traceback" not in run.stderr


async def test_unknown_worker_is_refused_with_exit_1(cli_env, live_edge, run_cli) -> None:
    edge = live_edge(1, sipp=False)
    run = await run_cli("drain", "fs9", env=cli_env(edge))
    assert run.returncode == 1
    assert "no worker 'fs9'" in run.stderr and "known: fs1" in run.stderr


@pytest.mark.slow
async def test_drain_sends_new_calls_elsewhere_while_calls_in_progress_finish(cli_env, live_edge, run_cli,
                                                                              stand_ins) -> None:
    edge = live_edge(2)
    w1, w2 = stand_ins
    # 6 calls held 4 s, round robin: 3 are up on each worker when fs1 is drained.
    before = sipp_uac(edge.workdir, "before", edge.sip_target, calls=6, rate=20, hold_ms=4000,
                      background=True)
    await asyncio.sleep(1.0)
    run = await run_cli("drain", "fs1", env=cli_env(edge))
    assert run.returncode == 0, run.stderr
    assert "fs1: drained" in run.stderr
    # New calls after the drain: all to fs2.
    after = await asyncio.to_thread(sipp_uac, edge.workdir, "after", edge.sip_target, calls=10, rate=20)
    assert (after.successful, after.failed) == (10, 0)
    # The calls that were up on fs1 finished normally (their ACK/BYE still crossed the edge to fs1).
    up = await asyncio.to_thread(finish_uac, before, edge.workdir / "before.csv")
    assert (up.returncode, up.successful, up.failed) == (0, 6, 0)
    s1, s2 = stop_all([w1, w2])
    assert (s1.calls_answered, s2.calls_answered) == (3, 13)
    assert edge.worker_flags()[w1.uri] == "DX"
    # The drain is persisted: admin-disabled (4) + probing (8) in the list file.
    assert read_list(edge.dispatcher_list).find(1, "fs1").flags == 12


async def test_drain_wait_returns_when_freeswitch_reports_zero_calls(cli_env, live_edge, run_cli,
                                                                      fake_fs) -> None:
    edge = live_edge(2, sipp=False)
    fs1 = await fake_fs(WORKER_IPS[0], calls=2)
    env = cli_env(edge, {"fs1": fs1.address})
    task = asyncio.create_task(run_cli("drain", "fs1", "--wait", "--timeout", "30", env=env))
    # Change the count only after the CLI has seen it (a loaded machine can take seconds to start it).
    await fs1.wait_for_command("api show calls count", timeout=30)
    assert not task.done()  # still 2 calls on fs1
    fs1.calls = 1
    await fs1.wait_for_command("api show calls count", timeout=30, start=len(fs1.commands))
    assert not task.done()
    fs1.calls = 0
    run = await asyncio.wait_for(task, 10)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert any("2 call(s) left" in line for line in lines), run.stderr
    assert any("1 call(s) left" in line for line in lines)
    assert lines[-1] == "fs1: no calls left, safe to stop"
    assert edge.worker_flags()[f"sip:{WORKER_IPS[0]}:5080"] == "DX"


async def test_drain_wait_times_out_with_exit_5_and_the_worker_stays_drained(cli_env, live_edge, run_cli,
                                                                             fake_fs) -> None:
    edge = live_edge(1, sipp=False)
    fs1 = await fake_fs(WORKER_IPS[0], calls=4)
    run = await run_cli("drain", "fs1", "--wait", "--timeout", "1", env=cli_env(edge, {"fs1": fs1.address}))
    assert run.returncode == 5
    assert "fs1: still 4 call(s) after 1 s; it stays drained" in run.stderr
    assert edge.worker_flags()[f"sip:{WORKER_IPS[0]}:5080"] == "DX"


async def test_drain_wait_with_freeswitch_unreachable_is_exit_4(cli_env, live_edge, run_cli) -> None:
    edge = live_edge(1, sipp=False)
    env = cli_env(edge, {"fs1": f"{WORKER_IPS[0]}:{free_port(WORKER_IPS[0])}:dispatch-test-secret"})
    run = await run_cli("drain", "fs1", "--wait", "--timeout", "5", env=env)
    assert run.returncode == 4
    assert "ESL" in run.stderr


async def test_enable_brings_a_drained_worker_back_after_its_probe(cli_env, live_edge, run_cli) -> None:
    edge = live_edge(2)
    env = cli_env(edge)
    assert (await run_cli("drain", "fs2", env=env)).returncode == 0
    run = await run_cli("enable", "fs2", "--timeout", "10", env=env)
    assert run.returncode == 0, run.stderr
    assert "fs2: active" in run.stderr
    uri = [u for u, f in edge.worker_flags().items() if u.startswith(f"sip:{WORKER_IPS[1]}")][0]
    assert edge.worker_flags()[uri] == "AP"
    assert read_list(edge.dispatcher_list).find(1, "fs2").flags == 8


async def test_enable_of_a_dead_worker_times_out_with_exit_5(cli_env, live_edge, run_cli) -> None:
    edge = live_edge(1, sipp=False)  # nothing answers its probes
    run = await run_cli("enable", "fs1", "--timeout", "3", env=cli_env(edge))
    assert run.returncode == 5
    assert "its OPTIONS probes are failing" in run.stderr


@pytest.mark.slow
async def test_add_and_remove_rewrite_the_list_and_reload_kamailio(cli_env, live_edge, run_cli, stand_ins,
                                                                   tmp_path) -> None:
    edge = live_edge(1)
    env = cli_env(edge)
    assert (await run_cli("drain", "fs1", env=env)).returncode == 0
    new = SippUas(tmp_path, "worker3", WORKER_IPS[2]).start()
    stand_ins.append(new)
    run = await run_cli("add", new.uri, "--duid", "fs3", "--attrs", "maxload=50", env=env)
    assert run.returncode == 0, run.stderr
    assert read_list(edge.dispatcher_list).find(1, "fs3").attrs == {"duid": "fs3", "maxload": "50"}
    flags = edge.worker_flags()
    assert flags[new.uri] == "AP"
    # The reload kept the drain (the file now says admin-disabled; "P" only means probing is
    # configured: disabled destinations are not probed, so it stays disabled).
    assert flags[stand_ins[0].uri][0] == "D"
    await asyncio.sleep(2.5)  # a few probe intervals
    assert edge.worker_flags()[stand_ins[0].uri][0] == "D"
    # New calls now reach the added worker (the other one is drained).
    stats = await asyncio.to_thread(sipp_uac, edge.workdir, "caller", edge.sip_target, calls=3, rate=10)
    assert (stats.successful, stats.failed) == (3, 0)
    assert stop_all([new])[0].calls_answered == 3

    # Removing a worker that still takes calls is refused; drained, it goes (second reload within
    # Kamailio's reload_delta is waited out, not failed).
    refused = await run_cli("remove", "fs3", env=env)
    assert refused.returncode == 1 and "drain it first" in refused.stderr
    assert (await run_cli("drain", "fs3", env=env)).returncode == 0
    removed = await run_cli("remove", "fs3", env=env)
    assert removed.returncode == 0, removed.stderr
    assert new.uri not in edge.worker_flags()
    assert read_list(edge.dispatcher_list).find(1, "fs3") is None


async def test_add_refuses_an_invalid_uri_and_a_duplicate_without_touching_the_file(cli_env, live_edge,
                                                                                     run_cli) -> None:
    edge = live_edge(1, sipp=False)
    env = cli_env(edge)
    before = edge.dispatcher_list.read_text()
    bad = await run_cli("add", "sip:user@10.0.0.1:5080", "--duid", "fs7", env=env)
    assert bad.returncode == 1 and "invalid worker URI" in bad.stderr
    dup = await run_cli("add", f"sip:{WORKER_IPS[0]}:5080", "--duid", "fs7", env=env)
    assert dup.returncode == 1 and "already in set 1 as 'fs1'" in dup.stderr
    assert edge.dispatcher_list.read_text() == before


async def test_reload_waits_out_kamailios_rate_limit_instead_of_failing(live_edge) -> None:
    # Kamailio compares whole seconds: with a 1 s delta the refusal window can shrink to nothing when the
    # first reload lands at the end of a second, so this test gives it 3 s.
    edge = live_edge(1, sipp=False, defines={"DS_RELOAD_DELTA": 3})
    async with KamailioRpc(edge.rpc_url) as rpc:
        await rpc.reload(reload_delta=3)
        # Kamailio itself refuses a second reload within reload_delta...
        with pytest.raises(KamailioRefused, match="Ongoing reload"):
            await rpc.call("dispatcher.reload")
        # ...the client waits it out.
        await rpc.reload(reload_delta=3)
        assert [d["URI"] for d in await rpc.dispatcher_list()] == [f"sip:{WORKER_IPS[0]}:5080"]
