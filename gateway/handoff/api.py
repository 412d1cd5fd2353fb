"""Admin API route for the human side: `GET /handoffs/{id}` (read scope, like every GET of the admin
API: gateway/auth.py checks the token before routing). The id is the X-AI-Handoff-Id the human's INVITE
and the webhook carry; the answer is the whole handoff, already redacted by the profile's policy."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, HTTPException

from gateway.handoff.record import HandoffStore

_ID = re.compile(r"ho_[A-Za-z0-9_-]{10,40}")


def handoffs_router(store: HandoffStore) -> APIRouter:
    r = APIRouter(tags=["handoffs"])

    @r.get("/handoffs/{handoff_id}",
           summary="a handoff: summary, attributes, transcript, attempts, deliveries")
    async def get_handoff(handoff_id: str) -> dict[str, Any]:
        h = store.get(handoff_id) if _ID.fullmatch(handoff_id) else None
        if h is None:
            raise HTTPException(404, "no such handoff (unknown or expired)")
        return h.as_dict()

    return r
