"""Per-call objects: the media session, tools, and (ESL helper) call control."""
