"""Call records: every call leaves a row, its turns, tool calls, handoffs and outcome (issue 16).

store.py    SQLite (WAL) or PostgreSQL behind one interface; schema.py holds the versioned migrations
writer.py   the writer task: a bounded buffer the call path appends to without ever waiting
redact.py   the profile's redaction policy, applied before anything leaves the call object
recorder.py what one call writes, as it happens
analysis.py the post-call record (extractive) and its signed webhook
memory.py   what the gateway remembers about a caller, injected at the next call's start
api.py      admin API routes (read scope)
"""
