"""Handing a caller to a human: summaries, routing attributes, delivery (SIP headers, webhook, admin
fetch by handoff id) and the warm transfer with a private briefing (docs/handoff.md)."""
