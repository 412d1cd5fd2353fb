"""Structured logs: PII fields are redacted on demand, JSON lines carry the call uuid."""

import json
import logging

from gateway.log import JsonFormatter, TextFormatter, fields, pii


def _record(**kw) -> logging.LogRecord:
    rec = logging.LogRecord("gateway.call", logging.INFO, __file__, 1, "caller said", None, None)
    rec.fields = kw
    return rec


def test_json_line_has_the_call_and_redacts_pii_when_asked():
    rec = _record(call="5d7a3f7e", transcript=pii("my card number is 4111"), caller=pii("+4930123"))
    doc = json.loads(JsonFormatter(redact_pii=True).format(rec))
    assert doc["msg"] == "caller said" and doc["call"] == "5d7a3f7e"
    assert doc["transcript"] == "[redacted]" and doc["caller"] == "[redacted]"
    assert "4111" not in JsonFormatter(redact_pii=True).format(rec)


def test_pii_is_kept_when_redaction_is_off():
    text = TextFormatter(redact_pii=False).format(_record(call="x", caller=pii("+4930123")))
    assert 'caller="+4930123"' in text and 'call="x"' in text


def test_fields_helper_builds_the_extra_mapping():
    assert fields(call="u") == {"fields": {"call": "u"}}
