"""Usage: <venv>/bin/python gateway-profile-check.py PROFILE.yaml

Checks one agent profile with the gateway's and the embedded engine's own models, exactly as they will
load it at start-up. Installed by the gateway role; used by its `validate:` step.
"""

import sys
from pathlib import Path

import yaml

from gateway.model.profiles import load_profile
from gateway.profiles import Profile

path = Path(sys.argv[1])
data = yaml.safe_load(path.read_text(encoding="utf-8"))
if not isinstance(data, dict):
    sys.exit(f"{path}: a profile must be a YAML mapping")
data.setdefault("name", path.stem)
Profile.model_validate(data)
load_profile(path)
