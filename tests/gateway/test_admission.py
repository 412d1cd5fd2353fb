"""Per-source and per-tenant admission (gateway/admission.py) on an injected clock, and the admin token
syntax."""

from __future__ import annotations

import pytest

from gateway.admission import PRUNE_AT, SourceAdmission, TenantAdmission
from gateway.auth import Scope, TokenAuthority, is_loopback, parse_admin_tokens, required_scope
from gateway.call.registry import Refused


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_source_gets_its_burst_then_its_rate_and_never_more_than_its_cap():
    clock = Clock()
    adm = SourceAdmission(max_streams=5, rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        adm.admit("10.0.0.1")
    with pytest.raises(Refused) as err:
        adm.admit("10.0.0.1")
    assert err.value.reason == "source_rate"
    adm.admit("10.0.0.2")  # another source is not affected
    clock.t += 0.5  # one token back at 2/s
    adm.admit("10.0.0.1")
    clock.t += 10  # plenty of tokens, but the cap holds
    adm.admit("10.0.0.1")
    with pytest.raises(Refused) as err:
        adm.admit("10.0.0.1")
    assert err.value.reason == "source_cap" and adm.live("10.0.0.1") == 5
    adm.release("10.0.0.1")
    adm.admit("10.0.0.1")  # a slot freed by a call that ended


def test_the_source_table_stays_bounded_under_address_spraying():
    clock = Clock()
    adm = SourceAdmission(max_streams=5, rate=100.0, burst=1, clock=clock)
    for i in range(3 * PRUNE_AT):
        adm.admit(f"s{i}")
        adm.release(f"s{i}")
        clock.t += 0.02  # each source's bucket refills before the sweep
    assert adm.tracked <= PRUNE_AT + 1


def test_twilio_reservations_count_against_the_tenant_cap_until_claimed_or_expired():
    clock = Clock()
    adm = TenantAdmission(clock=clock, reservation_s=30.0)
    adm.reserve("CA1", "acme", 2, "acme")
    adm.reserve("CA1", "acme", 2, "acme")  # a retried webhook renews, takes no second slot
    adm.admit("acme", 2, "acme")  # a FreeSWITCH stream
    assert adm.taken("acme") == 2 and adm.full("acme", 2)
    with pytest.raises(Refused) as err:
        adm.reserve("CA2", "acme", 2, "acme")
    assert err.value.reason == "tenant_cap"
    with pytest.raises(Refused):
        adm.claim("CA3", "acme", 2, "acme")  # a stream without a reservation, tenant full
    adm.claim("CA3", "acme", 2, "acme", force=True)  # a caller back from a transfer: admitted already
    adm.release("acme", "acme")
    adm.claim("CA1", "acme", 2, "acme")  # its reservation turns live: no cap check needed
    assert (adm.live("acme"), adm.reserved("acme")) == (2, 0)
    adm.release("acme", "acme")
    adm.release("acme", "acme")
    adm.reserve("CA4", "acme", 1, "acme")
    adm.reserve("CA5", "globex", None, "globex")  # no cap: nothing to hold
    assert adm.reserved("globex") == 0
    clock.t += 29.9
    assert adm.full("acme", 1)
    clock.t += 0.2  # its stream never came
    assert adm.taken("acme") == 0 and not adm.full("acme", 1)
    adm.reserve("CA6", "acme", 1, "acme")


def test_admin_token_syntax_scopes_and_constant_time_lookup():
    tokens = parse_admin_tokens("prom:metrics:" + "m" * 16 + ", noc:read:" + "r" * 20
                                + ",ops:control:" + "c:" * 10)
    assert [(t.name, t.scope) for t in tokens] == [("prom", Scope.METRICS), ("noc", Scope.READ),
                                                   ("ops", Scope.CONTROL)]
    auth = TokenAuthority(tokens)
    assert auth.identify("Bearer " + "c:" * 10).name == "ops"  # a secret may contain colons
    assert auth.identify("bearer " + "r" * 20).scope is Scope.READ
    assert auth.identify("Bearer " + "r" * 19) is None
    assert auth.identify("Bearer ") is None and auth.identify(None) is None
    assert auth.identify("Token " + "r" * 20) is None
    assert required_scope("GET", "/metrics") is Scope.METRICS
    assert required_scope("GET", "/calls") is Scope.READ
    assert required_scope("POST", "/calls/x/hangup") is Scope.CONTROL
    assert required_scope("GET", "/healthz") is None and required_scope("GET", "/readyz") is None


@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("127.9.9.9", True), ("::1", True),
                                       ("localhost", True), ("0.0.0.0", False), ("::", False),
                                       ("10.0.0.5", False), ("gw.example", False)])
def test_loopback_means_loopback(host, loop):
    assert is_loopback(host) is loop
