"""Draining a worker with a live call (issue 10): `dispatcher drain --wait` keeps waiting while the real
FreeSWITCH still carries the call, the call keeps its agent, new calls are not sent there, and the
drain ends once the caller hangs up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from speech import OPENING_HOURS, phrase

pytestmark = [pytest.mark.freeswitch, pytest.mark.slow]


def test_drain_waits_for_the_live_call_and_sends_no_new_calls(callpath):
    path = callpath("voxcom")
    call = path.call(wait_bye_s=90)
    assert call.wait_answered(15)
    assert call.wait_speech(since=call.answered, min_s=2.5, timeout=25, quiet_s=1.0) is not None
    fs = path.fs
    env = {**os.environ, "DISPATCHER_RPC_URL": path.edge.rpc_url,
           "DISPATCHER_LIST_FILE": str(path.edge.dispatcher_list),
           "DISPATCHER_ESL_WORKERS": json.dumps({fs.values["worker_id"]: fs.esl_address})}
    drain = subprocess.Popen([sys.executable, "-m", "dispatcher", "drain", "fs1", "--wait",
                              "--timeout", "60"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(3.0)
        assert drain.poll() is None, f"drain returned with a call still up: {drain.stdout.read()}"
        # The drained worker gets no new call: the edge has no other, so it refuses (never answered).
        refused = path.call(expect=503)
        assert refused.finished(20) == 0, refused.sipp.errors()
        # The live call still has its agent.
        call.say(phrase(OPENING_HOURS))
        end = call.wait_said()
        assert call.wait_speech(since=end, min_s=1.0, timeout=20, quiet_s=0.5) is not None, \
            "the live call lost its agent during the drain"
        assert call.hangup().startswith("SIP/2.0 200")
        assert drain.wait(timeout=30) == 0, drain.stdout.read()
    finally:
        if drain.poll() is None:
            drain.kill()
            drain.wait(5)
