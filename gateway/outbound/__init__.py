"""Outbound calls: originate, pacing and caps, campaigns, the after-hours ladder (docs/outbound.md)."""
