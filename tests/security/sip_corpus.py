"""A corpus of malformed and hostile SIP requests, each sent from a trunk address, plus valid controls.

Each case is (name, bytes, forward): forward=True only for the valid controls, the requests a worker
must receive. Built from families x variants x request kinds (initial INVITE, in-dialog requests
routed by the edge), so one rule missing shows up as a whole family.
"""

from __future__ import annotations

import random
import re

from sip_tools import SDP, request

JUNK_USERS = [
    "' OR '1'='1", "1;DROP TABLE calls", "admin'--", "1 UNION SELECT password FROM users",
    "%s%s%s%s%n", "%x%x%x%x", "%08x.%08x.%n", "${jndi:ldap://127.0.0.65/a}", "${env:ESL_PASSWORD}",
    "${jndi:${lower:l}dap://x/a}", "<script>alert(1)</script>", "$(reboot)", "`id`", "../../etc/passwd",
    "\\x00\\x01", "user name with spaces", "😀", "a" * 65, "1" * 10000, "+" * 3,
]


class Corpus:
    def __init__(self, edge_ip: str, edge_port: int, trunk: tuple[str, int], worker: tuple[str, int]) -> None:
        self.edge_ip, self.edge_port = edge_ip, edge_port
        self.trunk, self.worker = trunk, worker
        self.rng = random.Random(1103)
        self.cases: list[tuple[str, bytes, bool]] = []

    # ------------------------------------------------------------------ builders

    def invite(self, user: str = "+15550002222", **kw: object) -> bytes:
        kw.setdefault("body", SDP.format(ip=self.trunk[0]))
        return request("INVITE", f"sip:{user}@{self.edge_ip}:{self.edge_port}", src=self.trunk, **kw)

    def in_dialog(self, method: str, **kw: object) -> bytes:
        """A request inside a call the edge routed: Route = this edge, R-URI = the worker's Contact."""
        kw.setdefault("to_tag", "w1")
        kw.setdefault("route", f"<sip:{self.edge_ip}:{self.edge_port};lr;ds=1>")
        if method in ("INVITE", "UPDATE"):
            kw.setdefault("body", SDP.format(ip=self.trunk[0]))
        return request(method, f"sip:fs@{self.worker[0]}:{self.worker[1]}", src=self.trunk, **kw)

    def add(self, name: str, raw: bytes, forward: bool = False) -> None:
        """Each case gets its own Call-ID and Via branch (variants share a base request), so the edge
        never takes one for a retransmission of another and a forwarded case is identified."""
        n = len(self.cases)
        raw = re.sub(rb"z9hG4bK[0-9a-f]+", b"z9hG4bKc%dx%x" % (n, self.rng.getrandbits(32)), raw)
        for old in set(re.findall(rb"(?m)^Call-ID: ([^\r]+)\r$", raw)):
            raw = raw.replace(old, b"case%d-%x@corpus" % (n, self.rng.getrandbits(48)))
        self.cases.append((name, raw, forward))

    @staticmethod
    def replace(raw: bytes, old: bytes, new: bytes) -> bytes:
        assert old in raw, old
        return raw.replace(old, new, 1)

    @staticmethod
    def drop_header(raw: bytes, name: str) -> bytes:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(name.lower().encode() + b":")]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    @staticmethod
    def with_header(raw: bytes, line: bytes) -> bytes:
        first, _, rest = raw.partition(b"\r\n")
        return first + b"\r\n" + line + b"\r\n" + rest

    # ------------------------------------------------------------------ the corpus

    def build(self) -> list[tuple[str, bytes, bool]]:
        kinds = {"invite": lambda **kw: self.invite(**kw),
                 "reinvite": lambda **kw: self.in_dialog("INVITE", **kw),
                 "bye": lambda **kw: self.in_dialog("BYE", **kw),
                 "info": lambda **kw: self.in_dialog("INFO", **kw),
                 "notify": lambda **kw: self.in_dialog("NOTIFY", **kw)}
        # Valid controls: these must reach the worker.
        for i in range(6):
            self.add(f"valid/invite{i}", self.invite(user=["+15550002222", "1000", "sales", "+442071234567",
                                                            "*97", "#1"][i]), True)
        for kind in ("reinvite", "bye", "info", "notify"):
            self.add(f"valid/{kind}", kinds[kind](), True)

        for kind, make in kinds.items():
            base = make()
            self.add(f"{kind}/60kB_header", self.with_header(base, b"X-Pad: " + b"A" * 60_000))
            self.add(f"{kind}/20kB_subject", self.with_header(base, b"Subject: " + b"s" * 20_000))
            self.add(f"{kind}/1000_headers",
                     self.with_header(base, b"\r\n".join(b"X-H%d: v" % i for i in range(1000))))
            self.add(f"{kind}/100_headers",
                     self.with_header(base, b"\r\n".join(b"X-H%d: v" % i for i in range(100))))
            via = base.split(b"\r\n")[1]
            host_port, _, params = via.partition(b";")
            self.add(f"{kind}/via_no_branch", self.replace(base, via, host_port + b";rport"))
            self.add(f"{kind}/via_rfc2543_branch", self.replace(base, via, host_port + b";branch=1234;rport"))
            self.add(f"{kind}/via_empty_branch", self.replace(base, via, host_port + b";branch=;rport"))
            for port in (b"99999", b"65536", b"123456789", b"0099999"):
                hp = host_port.rsplit(b":", 1)[0] + b":" + port
                self.add(f"{kind}/via_port_{port.decode()}", self.replace(base, via, hp + b";" + params))
            self.add(f"{kind}/no_via", self.drop_header(base, "Via"))
            self.add(f"{kind}/via_bad_version", self.replace(base, b"Via: SIP/2.0/UDP", b"Via: SIP/3.0/UDP"))
            self.add(f"{kind}/via_bad_transport",
                     self.replace(base, b"Via: SIP/2.0/UDP", b"Via: SIP/2.0/XYZ"))
            for cseq in (b"4294967296", b"2147483648", b"99999999999999999999", b"-1", b"abc", b""):
                method = base.split(b" ", 1)[0]
                raw = self.replace(base, b"CSeq: 1 " + method, b"CSeq: " + cseq + b" " + method)
                self.add(f"{kind}/cseq_{cseq.decode() or 'empty'}", raw)
            self.add(f"{kind}/cseq_method_mismatch",
                     self.replace(base, b"CSeq: 1 " + base.split(b" ", 1)[0], b"CSeq: 1 OPTIONS"))
            for name in ("Call-ID", "From", "To", "CSeq"):
                self.add(f"{kind}/no_{name}", self.drop_header(base, name))
                line = next(ln for ln in base.split(b"\r\n") if ln.startswith(name.encode() + b":"))
                self.add(f"{kind}/double_{name}", self.with_header(base, line))
            self.add(f"{kind}/double_content_length", self.with_header(base, b"Content-Length: 0"))
            self.add(f"{kind}/content_length_too_big",
                     base.replace(b"Content-Length: ", b"Content-Length: 9", 1))
            self.add(f"{kind}/content_length_negative",
                     base.replace(b"Content-Length: ", b"Content-Length: -", 1))
            self.add(f"{kind}/max_forwards_0", self.replace(base, b"Max-Forwards: 70", b"Max-Forwards: 0"))
            self.add(f"{kind}/max_forwards_junk", self.replace(base, b"Max-Forwards: 70", b"Max-Forwards: x"))
            self.add(f"{kind}/sip_version_3", self.replace(base, b" SIP/2.0\r\n", b" SIP/3.0\r\n"))
            self.add(f"{kind}/http_scheme_ruri", base.replace(b" sip:", b" http:", 1))
            self.add(f"{kind}/jndi_user_agent", self.replace(base, b"User-Agent: Twilio Gateway",
                                                             b"User-Agent: ${jndi:ldap://127.0.0.65/x}"))
            self.add(f"{kind}/jndi_display_name",
                     self.replace(base, b"From: <", b'From: "${jndi:dns://x/a}" <'))
            self.add(f"{kind}/jndi_x_header", self.with_header(base, b"X-Api-Version: ${jndi:ldap://x/a}"))
            self.add(f"{kind}/fs_var_in_subject", self.with_header(base, b"Subject: ${system(id)}"))
            for n, junk in enumerate(("' OR '1'='1", "%s%s%n", "${jndi:ldap://x/a}", "1" * 10000)):
                self.add(f"{kind}/from_user_junk{n}",
                         self.replace(base, b"From: <sip:+15550001111@",
                                      b"From: <sip:" + junk.encode() + b"@"))
        # Initial-INVITE-only families.
        for n, junk in enumerate(JUNK_USERS):
            self.add(f"invite/ruri_user_junk{n}", self.invite(user=junk))
            self.add(f"invite/to_user_junk{n}",
                     self.replace(self.invite(), b"To: <sip:+15550002222@",
                                  b"To: <sip:" + junk.encode() + b"@"))
        self.add("invite/no_contact", self.invite(contact=False))
        self.add("invite/two_contacts", self.with_header(self.invite(), b"Contact: <sip:x@127.0.0.65:5060>"))
        self.add("invite/contact_junk", self.with_header(self.invite(contact=False), b"Contact: <junk::>"))
        self.add("reinvite/no_contact", self.in_dialog("INVITE", contact=False))
        for n in range(12):
            blob = bytes(self.rng.getrandbits(8) for _ in range(self.rng.randint(40, 600)))
            self.add(f"invite/random_sdp{n}", self.invite(body=blob.decode("latin-1")))
            self.add(f"reinvite/random_sdp{n}", self.in_dialog("INVITE", body=blob.decode("latin-1")))
        self.add("invite/sdp_with_nul", self.invite(body=SDP.format(ip="1.2.3.4").replace("s=-", "s=\x00")))
        self.add("invite/sdp_not_v0", self.invite(body="x=1\r\n" + SDP.format(ip="1.2.3.4")))
        self.add("invite/sdp_html", self.invite(body="<html><body>hi</body></html>\r\n"))
        self.add("invite/json_as_sdp", self.invite(body='{"v": 0}', content_type="application/sdp"))
        self.add("invite/body_wrong_type",
                 self.invite(body=SDP.format(ip="1.2.3.4"), content_type="text/plain"))
        self.add("invite/nul_in_header", self.with_header(self.invite(), b"X-N: a\x00b"))
        self.add("invite/crlf_only", b"\r\n\r\n")
        self.add("invite/garbage", b"\x00\x01GARBAGE \xff\xfe not sip at all\r\n\r\n")
        self.add("invite/request_line_only", b"INVITE sip:1@x SIP/2.0\r\n\r\n")
        self.add("invite/no_request_uri", self.invite().replace(b"INVITE sip:", b"INVITE  SIP", 1))
        self.add("invite/ruri_1024_host", self.invite().replace(b"@" + self.edge_ip.encode(),
                                                                b"@" + b"h" * 1024 + b".invalid", 1))
        return self.cases
