"""A local stand-in for Twilio's REST API (api.twilio.com/2010-04-01), for the calls the gateway makes.

It answers the documented JSON resources (https://www.twilio.com/docs/voice/api/call-resource,
https://www.twilio.com/docs/voice/api/conference-participant-resource) and Twilio's error body
(`{"code", "message", "more_info", "status"}`), checks HTTP Basic auth (AccountSid:AuthToken), and
records every request so tests assert on what Twilio would have received.

Conferences (https://www.twilio.com/docs/voice/api/conference-participant-resource): Create Participant
(From and To required; Coaching=true needs CallSidToCoach) answers a new participant with its own CallSid;
Update Participant (Hold, HoldUrl, EndConferenceOnExit, ...) answers the participant with the changes.
A test plays Twilio's side of the callbacks with `signed_post`, signed as Twilio signs them
(X-Twilio-Signature, https://www.twilio.com/docs/usage/webhooks/webhooks-security).
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Request:
    method: str
    path: str
    form: dict[str, str]
    pairs: list[tuple[str, str]] = field(default_factory=list)  # the form as sent (repeated keys kept)
    at: float = field(default_factory=time.monotonic)  # when it arrived (tests order it against media)


@dataclass
class FakeTwilioRest:
    account_sid: str
    auth_token: str
    host: str = "127.0.0.1"
    requests: list[Request] = field(default_factory=list)
    unknown_calls: set[str] = field(default_factory=set)  # CallSids answered with 404
    # Outbound calls (POST Calls.json): the statuses each `To` number goes through, one per fetch
    # (default: answered, then completed); `created` keeps each new call's sid -> current status.
    scripts: dict[str, list[str]] = field(default_factory=dict)
    created: dict[str, list[str]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _parties: dict[str, tuple[str, str]] = field(default_factory=dict)
    participants: dict[str, dict[str, Any]] = field(default_factory=dict)  # CallSid -> participant
    added: list[str] = field(default_factory=list)  # CallSids of the participants created, in order
    conference_sids: dict[str, str] = field(default_factory=dict)  # friendly name -> CF SID
    refuse: set[str] = field(default_factory=set)  # participant `To`s answered with 400 (invalid number)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FakeTwilioRest:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{ac}/Calls.json", self._create_call)
        app.router.add_get("/2010-04-01/Accounts/{ac}/Calls/{sid}.json", self._fetch_call)
        app.router.add_post("/2010-04-01/Accounts/{ac}/Calls/{sid}.json", self._update_call)
        app.router.add_post("/2010-04-01/Accounts/{ac}/Conferences/{conf}/Participants.json",
                            self._participant)
        app.router.add_post("/2010-04-01/Accounts/{ac}/Conferences/{conf}/Participants/{sid}.json",
                            self._update_participant)
        app.router.add_post("/v1/Conversations/{conv}/Messages", self._message)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _message(self, request: web.Request) -> web.Response:
        """Conversations API: create a Message
        (https://www.twilio.com/docs/conversations/api/conversation-message-resource)."""
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.json_response({"code": 20003, "message": "Authenticate", "more_info":
                                      "https://www.twilio.com/docs/errors/20003", "status": 401}, status=401)
        form = {k: str(v) for k, v in (await request.post()).items()}
        conv = request.match_info["conv"]
        self.requests.append(Request("POST", request.path, form))
        index = sum(1 for r in self.requests if r.path == request.path) - 1
        sid = f"IM{index:032x}"
        return web.json_response({
            "sid": sid, "account_sid": self.account_sid, "conversation_sid": conv, "body": form.get("Body"),
            "author": form.get("Author"), "index": index, "media": None, "attributes": "{}",
            "participant_sid": None, "date_created": "2026-12-06T10:00:00Z",
            "date_updated": "2026-12-06T10:00:00Z", "delivery": None, "content_sid": None,
            "url": f"https://conversations.twilio.com/v1/Conversations/{conv}/Messages/{sid}",
            "links": {}}, status=201)

    def messages(self, conversation_sid: str) -> list[dict[str, str]]:
        return [r.form for r in self.requests if r.path == f"/v1/Conversations/{conversation_sid}/Messages"]

    def _authorized(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}" and \
            request.match_info["ac"] == self.account_sid

    @staticmethod
    def _error(status: int, code: int, message: str) -> web.Response:
        body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status}
        return web.json_response(body, status=status)

    async def _update_call(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append(Request("POST", request.path, form))
        if not self._authorized(request):
            return self._error(401, 20003, "Authenticate")
        sid = request.match_info["sid"]
        if sid in self.created and form.get("Status"):  # an outbound call ended through the API
            self.created[sid] = [form["Status"]]
        if sid in self.unknown_calls:
            return self._error(404, 20404, f"The requested resource {request.path} was not found")
        return web.json_response({
            "sid": sid, "account_sid": self.account_sid, "status": form.get("Status", "in-progress"),
            "to": "+15550100", "from": "+15550111", "direction": "inbound", "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json",
        })

    def _call_json(self, sid: str, status: str, to: str, from_: str) -> dict[str, Any]:
        return {"sid": sid, "account_sid": self.account_sid, "status": status, "to": to, "from": from_,
                "direction": "outbound-api", "api_version": "2010-04-01",
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json"}

    async def _create_call(self, request: web.Request) -> web.Response:
        """Create a Call (https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource)."""
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append(Request("POST", request.path, form))
        if not self._authorized(request):
            return self._error(401, 20003, "Authenticate")
        if not form.get("To") or not form.get("From") or not (form.get("Twiml") or form.get("Url")):
            return self._error(400, 21201, "No 'To', 'From' or 'Twiml'/'Url' specified")
        sid = "CA" + uuid.uuid4().hex
        self.created[sid] = ["queued", *self.scripts.get(form["To"], ["ringing", "in-progress", "completed"])]
        self._parties[sid] = (form["To"], form["From"])
        return web.json_response(self._call_json(sid, "queued", form["To"], form["From"]), status=201)

    async def _fetch_call(self, request: web.Request) -> web.Response:
        self.requests.append(Request("GET", request.path, {}))
        if not self._authorized(request):
            return self._error(401, 20003, "Authenticate")
        sid = request.match_info["sid"]
        steps = self.created.get(sid)
        if steps is None:
            return self._error(404, 20404, f"The requested resource {request.path} was not found")
        if len(steps) > 1:
            steps.pop(0)
        to, from_ = self._parties[sid]
        return web.json_response(self._call_json(sid, steps[0], to, from_))

    def _participant_json(self, conf: str, sid: str, p: dict[str, Any]) -> dict[str, Any]:
        """A Participant resource as Twilio returns it (conference addressed by name or by SID)."""
        conference_sid = conf if conf.startswith("CF") else self.conference_sids.setdefault(
            conf, "CF" + uuid.uuid4().hex)
        return {"account_sid": self.account_sid, "call_sid": sid, "label": p.get("label"),
                "call_sid_to_coach": p.get("call_sid_to_coach"), "coaching": p.get("coaching", False),
                "conference_sid": conference_sid, "date_created": "Sun, 06 Dec 2026 10:00:00 +0000",
                "date_updated": "Sun, 06 Dec 2026 10:00:00 +0000",
                "end_conference_on_exit": p.get("end_conference_on_exit", False),
                "muted": p.get("muted", False), "hold": p.get("hold", False),
                "start_conference_on_enter": p.get("start_conference_on_enter", True),
                "status": p.get("status", "queued"), "queue_time": None,
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Conferences/{conference_sid}/Participants/"
                       f"{sid}.json"}

    async def _participant(self, request: web.Request) -> web.Response:
        """Create Participant."""
        posted = await request.post()
        form = {k: str(v) for k, v in posted.items()}
        self.requests.append(Request("POST", request.path, form, [(k, str(v)) for k, v in posted.items()]))
        if not self._authorized(request):
            return self._error(401, 20003, "Authenticate")
        if not form.get("From") or not form.get("To"):
            return self._error(400, 21201, "No 'To' or 'From' specified")
        coaching = form.get("Coaching") == "true"
        if coaching and not form.get("CallSidToCoach"):
            return self._error(400, 21210, "CallSidToCoach is required when Coaching is true")
        if form["To"] in self.refuse:
            return self._error(400, 21211, f"Invalid 'To' Phone Number: {form['To']}")
        sid = "CA" + uuid.uuid4().hex
        p = {"label": form.get("Label"), "coaching": coaching,
             "call_sid_to_coach": form.get("CallSidToCoach"),
             "end_conference_on_exit": form.get("EndConferenceOnExit") == "true",
             "start_conference_on_enter": form.get("StartConferenceOnEnter", "true") == "true",
             "muted": form.get("Muted") == "true"}
        self.participants[sid] = p
        self.added.append(sid)
        return web.json_response(self._participant_json(request.match_info["conf"], sid, p), status=201)

    async def _update_participant(self, request: web.Request) -> web.Response:
        """Update Participant (Hold, HoldUrl, Muted, EndConferenceOnExit, Coaching, CallSidToCoach, ...)."""
        posted = await request.post()
        form = {k: str(v) for k, v in posted.items()}
        self.requests.append(Request("POST", request.path, form, [(k, str(v)) for k, v in posted.items()]))
        if not self._authorized(request):
            return self._error(401, 20003, "Authenticate")
        sid = request.match_info["sid"]
        p = self.participants.setdefault(sid, {"status": "connected"})
        # Coaching=true needs CallSidToCoach, naming a participant of the conference (Twilio: 16028,
        # https://www.twilio.com/docs/api/errors/16028); Coaching=false alone makes everyone hear it.
        if form.get("Coaching") == "true" and not form.get("CallSidToCoach"):
            return self._error(400, 21210, "CallSidToCoach is required when Coaching is true")
        if form.get("CallSidToCoach") and form["CallSidToCoach"] not in self.participants:
            return self._error(400, 16028, "Participant to be whispered is not present in the conference")
        for key, name in (("Hold", "hold"), ("Muted", "muted"), ("Coaching", "coaching"),
                          ("EndConferenceOnExit", "end_conference_on_exit")):
            if key in form:
                p[name] = form[key] == "true"
        if "Coaching" in form:
            p["call_sid_to_coach"] = form.get("CallSidToCoach") if p["coaching"] else None
        return web.json_response(self._participant_json(request.match_info["conf"], sid, p))

    def participant_requests(self) -> list[Request]:
        return [r for r in self.requests if "/Participants" in r.path]

    async def signed_post(self, url: str, params: dict[str, str], *, sign_url: str | None = None,
                          signature: str | None = None) -> tuple[int, str]:
        """POST a form to the gateway as Twilio does, signed with this account's auth token."""
        import aiohttp
        from twilio.request_validator import RequestValidator

        sig = signature if signature is not None else \
            RequestValidator(self.auth_token).compute_signature(sign_url or url, params)
        async with aiohttp.ClientSession() as http, http.post(url, data=params,
                                                               headers={"X-Twilio-Signature": sig}) as resp:
            return resp.status, await resp.text()

    def calls_updates(self) -> list[dict[str, Any]]:
        return [r.form for r in self.requests if "/Calls/" in r.path]
