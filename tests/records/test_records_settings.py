"""Records settings: refused at start-up with a message naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import Settings


def test_a_records_url_of_an_unknown_kind_is_refused():
    with pytest.raises(ValidationError, match="records_url must start with"):
        Settings(records_url="mysql://db/records")


def test_a_webhook_without_a_signing_secret_is_refused():
    with pytest.raises(ValidationError, match="records_webhook_secret"):
        Settings(records_webhook_url="https://hooks.example/records")


def test_conversation_sync_without_twilio_credentials_is_refused():
    with pytest.raises(ValidationError, match="records_twilio_conversations needs twilio_account_sid"):
        Settings(records_twilio_conversations=True)


def test_gateway_serve_stops_when_the_store_cannot_be_opened(tmp_path: Path):
    env = {**os.environ, "GATEWAY_MODEL_BACKEND": "null-silence", "GATEWAY_MEDIA_HOST": "127.0.0.165",
           "GATEWAY_MEDIA_PORT": "0", "GATEWAY_ADMIN_HOST": "127.0.0.165", "GATEWAY_ADMIN_PORT": "0",
           "GATEWAY_RECORDS_URL": f"sqlite:///{tmp_path}/missing-dir/records.db"}
    proc = subprocess.run([sys.executable, "-m", "gateway", "serve"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "invalid setting GATEWAY_RECORDS_URL: record store unusable" in proc.stderr
