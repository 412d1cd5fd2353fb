"""Load-test harness: SIPp scenarios, a runner with reports, and a media-plane load generator.

`loadtest sip ...` drives the real `sipp` binary (Debian `sip-tester`); `loadtest media ...` drives
the gateway's media plane with the `gateway call` client core.  See docs/loadtest.md.
"""

from pathlib import Path

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


def scenario_path(name: str) -> Path:
    """Path of a shipped scenario, by file name with or without `.xml`."""
    if not name.endswith(".xml"):
        name += ".xml"
    path = SCENARIO_DIR / name
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.xml")))
        raise FileNotFoundError(f"no scenario {name!r} in {SCENARIO_DIR} (known: {known})")
    return path
