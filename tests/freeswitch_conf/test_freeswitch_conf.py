"""freeswitch-conf/: well-formed, every deployment value a documented vars.xml variable, the intended
modules only, and a dialplan whose stream metadata is the JSON the gateway expects."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[2] / "freeswitch-conf"
XML_FILES = sorted(CONF.rglob("*.xml"))
PREPROCESS_INCLUDE = re.compile(r'<X-PRE-PROCESS cmd="include" data="([^"]+)"/>')
GLOBAL_VAR = re.compile(r"\$\$\{([A-Za-z0-9_]+)\}")

INTENDED_MODULES = [
    "mod_console", "mod_logfile", "mod_event_socket", "mod_sofia", "mod_loopback", "mod_commands",
    "mod_conference", "mod_dptools", "mod_dialplan_xml", "mod_spandsp", "mod_sndfile", "mod_native_file",
    "mod_tone_stream", "mod_audio_stream", "mod_curl", "mod_lua",
]


def vars_defined() -> dict[str, str]:
    text = (CONF / "vars.xml").read_text()
    # set: a value; exec-set: the command whose output is the value (secrets, see vars.xml)
    return dict(re.findall(r'<X-PRE-PROCESS cmd="(?:exec-)?set" data="([A-Za-z0-9_]+)=([^"]*)"/>', text))


# Set by FreeSWITCH itself from its command line (-conf), not by vars.xml.
CORE_VARS = {"conf_dir"}


def expand(path: Path, depth: int = 0) -> str:
    """FreeSWITCH's pre-processor for what we use: include (globs, relative paths resolved from the
    including file's directory, as vanilla's `../sip_profiles/*.xml` relies on) and $${var} substitution."""
    assert depth < 8, "include loop"
    text = path.read_text()
    text = re.sub(r"<\?xml[^>]*\?>", "", text)

    def include(match: re.Match[str]) -> str:
        pattern = match.group(1)
        base = path.parent
        files = sorted(base.glob(pattern)) if "*" in pattern else [base / pattern]
        assert files, f"{path.name}: include {pattern!r} matches nothing"
        parts = []
        for f in files:
            inner = expand(f, depth + 1)
            # An included file's <include> wrapper disappears, like in FreeSWITCH.
            inner = re.sub(r"^\s*<include>|</include>\s*$", "", inner.strip())
            parts.append(inner)
        return "\n".join(parts)

    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = PREPROCESS_INCLUDE.sub(include, text)
    if depth == 0:
        values = {**vars_defined(), "conf_dir": str(CONF)}
        text = re.sub(r'<X-PRE-PROCESS cmd="set" data="[^"]*"/>', "", text)
        text = GLOBAL_VAR.sub(lambda m: values[m.group(1)], text)
    return text


@pytest.fixture(scope="module")
def document() -> ET.Element:
    return ET.fromstring(expand(CONF / "freeswitch.xml"))


@pytest.mark.skipif(shutil.which("xmllint") is None, reason="xmllint (libxml2-utils) not installed")
@pytest.mark.parametrize("path", XML_FILES, ids=lambda p: str(p.relative_to(CONF)))
def test_every_file_is_well_formed_xml(path: Path) -> None:
    result = subprocess.run(["xmllint", "--noout", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_every_global_variable_used_is_defined_and_documented() -> None:
    defined = vars_defined()
    header = (CONF / "vars.xml").read_text().split("-->", 1)[0]
    used: set[str] = set()
    for path in XML_FILES:
        for name in GLOBAL_VAR.findall(re.sub(r"<!--.*?-->", "", path.read_text(), flags=re.S)):
            if name in CORE_VARS:
                continue
            used.add(name)
            assert name in defined, f"{path.relative_to(CONF)} uses $${{{name}}}, not defined in vars.xml"
    # Read at run time: by the Lua scripts (getGlobalVariable / global("...")) or as ${name} in the dialplan.
    for script in (CONF / "scripts").glob("*.lua"):
        names = re.findall(r'(?:getGlobalVariable|global)\("([a-z_]+)"\)', script.read_text())
        used.update(n for n in names if n in defined)
    for path in XML_FILES:
        used.update(n for n in re.findall(r"(?<!\$)\$\{([a-z_]+)\}", path.read_text()) if n in defined)
    assert set(defined) == used, f"defined but never used: {sorted(set(defined) - used)}"
    for name in defined:
        assert re.search(rf"^\s+{name}\s", header, re.M), f"{name} is not documented at the top of vars.xml"


def test_no_deployment_value_is_hard_coded() -> None:
    # Addresses, ports and secrets live in vars.xml only.
    for path in XML_FILES:
        if path.name == "vars.xml":
            continue
        text = re.sub(r"<!--.*?-->", "", path.read_text(), flags=re.S)
        assert not re.search(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b", text), f"IP address in {path.name}"
        assert "ClueCon" not in text and "change-me" not in text, f"secret in {path.name}"


def test_the_expanded_tree_is_well_formed_and_complete(document: ET.Element) -> None:
    assert document.tag == "document"
    names = {c.get("name") for c in document.iter("configuration")}
    assert {"modules.conf", "switch.conf", "acl.conf", "event_socket.conf", "sofia.conf", "conference.conf",
            "console.conf", "logfile.conf"} <= names
    assert [c.get("name") for c in document.iter("context")] == ["from-kamailio", "ai-gateway", "ai-transfer"]


def test_modules_conf_loads_exactly_the_intended_list(document: ET.Element) -> None:
    (modules,) = [c for c in document.iter("configuration") if c.get("name") == "modules.conf"]
    assert [m.get("module") for m in modules.iter("load")] == INTENDED_MODULES


def _params(element: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in element.iter("param")}


def test_sip_profile_admits_only_kamailio_without_registration(document: ET.Element) -> None:
    (profile,) = [p for p in document.iter("profile") if p.get("name") == "kamailio"]
    settings = _params(profile.find("settings"))
    values = vars_defined()
    assert settings["sip-ip"] == settings["rtp-ip"] == values["private_ip"]
    assert settings["apply-inbound-acl"] == "kamailio" and settings["auth-calls"] == "false"
    assert settings["disable-register"] == "true"
    assert settings["inbound-codec-prefs"].split(",")[:2] == ["PCMU", "PCMA"]
    assert settings["context"] == "from-kamailio"
    gateway = profile.find("gateways/gateway")
    assert gateway.get("name") == "kamailio-edge"
    assert _params(gateway)["proxy"] == values["kamailio_edge"] and _params(gateway)["register"] == "false"
    (acl,) = [c for c in document.iter("configuration") if c.get("name") == "acl.conf"]
    lists = {lst.get("name"): lst for lst in acl.iter("list")}
    assert lists["kamailio"].get("default") == "deny"
    assert [n.get("cidr") for n in lists["kamailio"].iter("node")] == [values["kamailio_acl_cidr"]]


def test_event_socket_is_private_with_password_and_acl(document: ET.Element) -> None:
    (esl,) = [c for c in document.iter("configuration") if c.get("name") == "event_socket.conf"]
    params = _params(esl)
    values = vars_defined()
    assert params["listen-ip"] == values["private_ip"]
    assert params["password"] == values["esl_password"]
    assert params["apply-inbound-acl"] == "esl-clients"


def test_session_limits_and_rtp_range_come_from_vars(document: ET.Element) -> None:
    (switch,) = [c for c in document.iter("configuration") if c.get("name") == "switch.conf"]
    params = _params(switch)
    values = vars_defined()
    assert int(params["max-sessions"]) == int(values["max_sessions"]) > 1000  # raised from the default
    assert int(params["rtp-start-port"]) < int(params["rtp-end-port"])


def test_conference_profile_has_no_caller_controls(document: ET.Element) -> None:
    (conf,) = [c for c in document.iter("configuration") if c.get("name") == "conference.conf"]
    (profile,) = conf.iter("profile")
    assert profile.get("name") == vars_defined()["conference_profile"]
    assert _params(profile)["caller-controls"] == "none"
    assert conf.find("caller-controls") is None


def _actions(document: ET.Element, context: str, extension: str) -> list[tuple[str, str]]:
    (ctx,) = [c for c in document.iter("context") if c.get("name") == context]
    (ext,) = [e for e in ctx.iter("extension") if e.get("name") == extension]
    return [(a.get("application"), a.get("data") or "") for a in ext.iter("action")]


def _set_value(actions: list[tuple[str, str]], var: str) -> str:
    (value,) = [d.split("=", 1)[1] for app, d in actions if app == "set" and d.startswith(var + "=")]
    return value


def test_dialplan_starts_the_stream_with_contract_metadata(document: ET.Element) -> None:
    actions = _actions(document, "from-kamailio", "ai-agent")
    values = vars_defined()
    assert _set_value(actions, "STREAM_HEART_BEAT") == values["stream_heart_beat"]
    assert _set_value(actions, "STREAM_MESSAGE_DEFLATE") == "true"
    assert json.loads(_set_value(actions, "STREAM_EXTRA_HEADERS")) == {
        "Authorization": f"Bearer {values['stream_token']}"}
    # The stream is started (and its connect awaited) by the Lua script, from the gateway list.
    assert ("lua", "$${conf_dir}/scripts/ai_stream_start.lua") in [
        (app, d.replace(str(CONF), "$${conf_dir}")) for app, d in actions]
    script = (CONF / "scripts" / "ai_stream_start.lua").read_text()
    # the query (?tenant=&profile=&callee=) lets the gateway hold the call against its tenant's inbound cap
    assert '" start " .. url .. "/" .. uuid .. suffix .. " " .. mix .. " " .. rate' in script
    # mono (the caller's voice) unless the gateway asks for "mixed" (the handoff note-taker)
    assert 'if mix ~= "mixed" then\n  mix = "mono"' in script
    assert values["gateway_stream_urls"].startswith("ws://")
    # Expand the metadata as FreeSWITCH would for a sample call: it must be the contract's JSON.
    sample = {"ai_caller": "+15551234567", "ai_callee": "+15550100", "ai_call_id": "CA" + "0" * 32,
              "ai_profile": "front-desk", "ai_stream_rate_hz": "8000", "ai_hops": "1"}
    template = _set_value(actions, "ai_stream_metadata")
    metadata = re.sub(r"\$\{([a-z_]+)\}", lambda m: sample[m.group(1)], template)
    assert json.loads(metadata) == {
        "caller": "+15551234567", "callee": "+15550100", "call_id": "CA" + "0" * 32,
        "worker": values["worker_id"], "profile": "front-desk", "rate": 8000,
        "hops": "1",  # X-AI-Hops of the INVITE (issue 14): the gateway caps handoffs on it
    }
    # No quote or backslash may reach the argument list (switch_separate_string would eat it).
    assert "'" not in metadata and "\\" not in metadata
    apps = [app for app, _ in actions]
    assert apps[-1] == "transfer" and "answer" not in apps  # answered only once the stream started


def test_stream_check_parks_on_success_and_refuses_with_503_otherwise(document: ET.Element) -> None:
    (ctx,) = [c for c in document.iter("context") if c.get("name") == "ai-gateway"]
    (ext,) = [e for e in ctx.iter("extension") if e.get("name") == "ai-stream-check"]
    check = ext.findall("condition")[-1]
    assert check.get("field") == "${ai_stream_result}"
    assert re.match(check.get("expression"), "+OK Success\n")
    assert not re.match(check.get("expression"), "-ERR Operation Failed\n")
    assert [a.get("application") for a in check.findall("action")] == ["answer", "park"]
    assert ("hangup", "NORMAL_TEMPORARY_FAILURE") in [(a.get("application"), a.get("data"))
                                                      for a in check.findall("anti-action")]


@pytest.mark.parametrize("value, safe", [
    ("+15551234567", True), ("anonymous", True), ("1000", True),
    ('"},"x":"', False), ("a'b", False), ("a\\b", False), ("a b", False), ("x" * 40, False),
])
def test_caller_id_filter_keeps_metadata_json_safe(document: ET.Element, value: str, safe: bool) -> None:
    (ctx,) = [c for c in document.iter("context") if c.get("name") == "from-kamailio"]
    (ext,) = [e for e in ctx.iter("extension") if e.get("name") == "ai-caller"]
    expression = ext.find("condition").get("expression")
    assert bool(re.fullmatch(expression.strip("^$"), value)) is safe


def test_profile_files_select_profile_and_rate(document: ET.Element) -> None:
    actions = _actions(document, "from-kamailio", "profile-front-desk")
    assert _set_value(actions, "ai_profile") == "front-desk"
    assert _set_value(actions, "ai_stream_rate") in ("8k", "16k")
    (ctx,) = [c for c in document.iter("context") if c.get("name") == "from-kamailio"]
    order = [e.get("name") for e in ctx.iter("extension")]
    assert order.index("profile-front-desk") < order.index("ai-agent")
    assert order.index("ai-defaults") < order.index("profile-front-desk")


def test_outbound_legs_leave_through_the_edge(document: ET.Element) -> None:
    number = _actions(document, "ai-transfer", "ai-transfer-number")
    bridges = [d for app, d in number if app == "bridge"]
    assert bridges and all("sofia/gateway/kamailio-edge/" in b for b in bridges)
    uri = _actions(document, "ai-transfer", "ai-transfer-uri")
    (bridge,) = [d for app, d in uri if app == "bridge"]
    # The edge is the next hop (Route), the target stays the R-URI (fs_path= made it sip:EDGE;lr).
    assert f"sip_route_uri=sip:{vars_defined()['kamailio_edge']};lr}}" in bridge and "fs_path" not in bridge
    conference = _actions(document, "ai-transfer", "ai-conference")
    assert ("conference", "$1@" + vars_defined()["conference_profile"] + "+flags{endconf}") in conference


def test_transfer_context_matches_what_call_control_sends(document: ET.Element) -> None:
    from gateway.call.control import ControlSettings

    settings = ControlSettings()
    (ctx,) = [c for c in document.iter("context") if c.get("name") == settings.transfer_context]
    extensions = {e.get("name"): e for e in ctx.iter("extension")}
    number = extensions["ai-transfer-number"].find("condition").get("expression")
    assert number == f"^({settings.extension_pattern})$"
    assert settings.transfer_uri_extension in extensions and settings.conference_extension in extensions
    # A target that slips through anyway goes back to park instead of being dropped.
    last = list(ctx.iter("extension"))[-1]
    assert [a.get("application") for a in last.iter("action")][-1] == "park"
    (gw_ctx,) = [c for c in document.iter("context") if c.get("name") == "ai-gateway"]
    app, dest, context = settings.coach_dial.split("/")
    assert app == "loopback" and context == "ai-gateway"
    assert dest in {e.get("name") for e in gw_ctx.iter("extension")}
