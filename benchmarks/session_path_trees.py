"""The call's own CPU per frame pair (`session_path_cost` in benchmarks/media_plane.py) of several source
trees, interleaved, so a regression between commits is measured in one run on a shared machine.

    git archive bc8b456 | (mkdir -p /tmp/old && tar -x -C /tmp/old)
    .venv/bin/python benchmarks/session_path_trees.py /tmp/old . --rounds 5

Each tree runs its own `benchmarks/media_plane.py` in a fresh process started in the tree (its `gateway`
package first on the path). Figure: CPU
time (`time.process_time`) of `session_path_cost(20000)` minus `session_path_cost(200)`, per 19,800
frames (call set-up and import cost cancel out), best of 3; one figure per tree per round.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import importlib.util, logging, sys, time
root = sys.argv[1]
spec = importlib.util.spec_from_file_location("media_plane", root + "/benchmarks/media_plane.py")
mp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mp)
logging.disable(logging.WARNING)
kw = {"protocol": sys.argv[2]} if sys.argv[2] != "freeswitch" else {}
def cpu(n):
    c0 = time.process_time()
    mp.session_path_cost(n, **kw)
    return time.process_time() - c0
cpu(200)
print(round(min((cpu(20000) - cpu(200)) / 19800 for _ in range(3)) * 1e6, 1))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trees", nargs="+", type=Path)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--protocol", default="freeswitch", choices=["freeswitch", "twilio"])
    args = p.parse_args()
    results: dict[str, list[float | str]] = {str(t): [] for t in args.trees}
    for _ in range(args.rounds):
        for tree in args.trees:
            root = str(tree.resolve())
            env = {**os.environ, "PYTHONPATH": root}
            out = subprocess.run([sys.executable, "-c", CHILD, root, args.protocol], env=env, cwd=root,
                                 capture_output=True, text=True, check=False)
            value: float | str = float(out.stdout.split()[-1]) if out.returncode == 0 else out.stderr[-300:]
            results[str(tree)].append(value)
            print(f"{tree}: {value} us CPU per frame pair", flush=True)
    print(json.dumps({"load_1m": os.getloadavg()[0], "us_per_frame_pair": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
