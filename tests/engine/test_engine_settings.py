"""`gateway model` and `gateway serve` often share one environment file (the Ansible role writes one):
the engine must read only its own GATEWAY_ENGINE_* variables, never the gateway's GATEWAY_MODEL_*."""

from gateway.engine.settings import EngineSettings


def test_engine_reads_its_own_prefix_and_ignores_the_gateways_model_settings(monkeypatch):
    monkeypatch.setenv("GATEWAY_MODEL_URL", "ws://10.0.0.9:8092/v1")  # the gateway's client setting
    monkeypatch.setenv("GATEWAY_MODEL_PORT", "1")
    monkeypatch.setenv("GATEWAY_ENGINE_PORT", "18092")
    monkeypatch.setenv("GATEWAY_ENGINE_TOKEN", "engine-secret-0123456789")
    settings = EngineSettings()
    assert settings.port == 18092
    assert settings.token == "engine-secret-0123456789"
