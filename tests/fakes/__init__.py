"""Loopback fakes shared by the test areas, for components that cannot run here.

Import as `from fakes.freeswitch_esl import FakeFreeSwitch` (pytest puts `tests/` on sys.path because
`tests/conftest.py` has no package around it). Each fake speaks the real protocol byte for byte,
replaying captures kept in `fixtures/` (see fixtures/README.md).
"""
