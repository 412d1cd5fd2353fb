"""Usage: <venv>/bin/python gateway-profile-check.py PROFILE.yaml

Checks one agent profile with the gateway's and the embedded engine's own models, exactly as they will
load it at start-up. Installed by the gateway role; used by its `validate:` step.
"""

import sys
from pathlib import Path

from gateway.engine.profiles import load_profile as load_engine_profile
from gateway.profiles import ProfileError, load_profile

path = Path(sys.argv[1])
try:
    load_profile(path)
    load_engine_profile(path)
except ProfileError as exc:
    sys.exit(str(exc))
