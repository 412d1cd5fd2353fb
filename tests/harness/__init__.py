"""Start the real call path on loopback: FreeSWITCH with the project's freeswitch-conf/, the project's
Kamailio cfg, `gateway serve`, `gateway model`, SIPp as carrier and human, and RTP endpoints that decode
what each side hears on the wire.

Importable from every test folder as ``harness`` (tests/ is on sys.path through tests/conftest.py).
Nothing here binds a fixed port: every process gets the 127.0.0.x address it is given and free ports.
"""
