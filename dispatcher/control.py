"""What the `dispatcher` verbs do: Kamailio dispatcher state over JSON-RPC plus FreeSWITCH call counts.

Draining a worker = set it *disabled* ("d") in Kamailio: no new call goes there, calls already up keep
flowing (in-dialog requests follow Record-Route, not the dispatcher), and OPTIONS probes stop, so a
probe cannot bring it back behind the operator's back (an "i" state would be revived by the next
successful probe). When the list file is present the admin-disabled flag (4) is also written there,
so the drain survives a `dispatcher.reload` and a Kamailio restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from dispatcher.esl import WorkerUnreachable, calls_count
from dispatcher.listfile import (
    FLAG_DISABLED,
    FLAG_PROBING,
    Entry,
    ListError,
    parse_attrs,
    parse_uri,
    read_list,
    validate_duid,
    write_list_atomically,
)
from dispatcher.rpc import KamailioRefused, KamailioRpc
from dispatcher.settings import DispatcherSettings

STATES = {"A": "active", "I": "inactive", "T": "trying", "D": "disabled"}

CallsCounter = Callable[..., Awaitable[int]]


class DispatcherError(Exception):
    """A refusal of the tool itself (unknown worker, unsafe removal, timeout...)."""


class UnknownWorker(DispatcherError):
    pass


class NoEslPassword(DispatcherError):
    """No usable ESL password for a worker: there is deliberately no default (FreeSWITCH ships ClueCon)."""


# Shipped sample values that must never authenticate anything.
PLACEHOLDER_SECRETS = frozenset({"cluecon", "change-me", "changeme"})


class NotActiveInTime(DispatcherError):
    """enable: the worker's OPTIONS probes kept failing until the timeout."""


class DrainTimeout(DispatcherError):
    def __init__(self, worker: str, calls: int | None, timeout: float) -> None:
        left = "unknown" if calls is None else str(calls)
        super().__init__(f"{worker}: still {left} call(s) after {timeout:g} s; it stays drained")
        self.calls = calls


@dataclass
class WorkerStatus:
    duid: str | None
    uri: str
    setid: int
    flags: str
    priority: int = 0
    attrs: dict[str, str] = field(default_factory=dict)
    load: int | None = None
    esl: str | None = None
    active_calls: int | None = None
    esl_error: str | None = None

    @property
    def name(self) -> str:
        return self.duid or self.uri

    @property
    def state(self) -> str:
        return STATES.get(self.flags[:1], "unknown")

    @property
    def probing(self) -> bool:
        return self.flags[1:2] == "P"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(state=self.state, probing=self.probing)
        return data


def worker_from_dest(dest: dict[str, Any]) -> WorkerStatus:
    """One destination of the `dispatcher.list` RPC result (pure)."""
    attrs_field = dest.get("ATTRS") or {}
    body = attrs_field.get("BODY") or ""
    try:
        attrs = parse_attrs(body)
    except ListError:
        attrs = {}
    runtime = dest.get("RUNTIME") or {}
    return WorkerStatus(
        duid=attrs_field.get("DUID") or attrs.get("duid"),
        uri=str(dest.get("URI", "")),
        setid=int(dest.get("SETID") or 0),
        flags=str(dest.get("FLAGS", "")),
        priority=int(dest.get("PRIORITY") or 0),
        attrs=attrs,
        load=runtime.get("DLGLOAD"),
    )


class EdgeControl:
    def __init__(self, settings: DispatcherSettings, rpc: KamailioRpc,
                 count_calls: CallsCounter = calls_count) -> None:
        self.settings, self.rpc, self._count_calls = settings, rpc, count_calls

    # ---------------------------------------------------------------- reading

    async def workers(self) -> list[WorkerStatus]:
        dests = await self.rpc.dispatcher_list()
        found = [worker_from_dest(d) for d in dests if int(d.get("SETID") or 0) == self.settings.setid]
        # Kamailio lists a set newest-first; operators read the list file's order.
        found.reverse()
        return found

    def esl_address(self, worker: WorkerStatus) -> tuple[str, int, str]:
        host, port, password = self._esl_address(worker)
        if not password:
            raise NoEslPassword(f"{worker.name}: no ESL password set: set DISPATCHER_ESL_PASSWORD (or "
                                f"host:port:password in DISPATCHER_ESL_WORKERS); there is no default")
        if password.lower() in PLACEHOLDER_SECRETS:
            raise NoEslPassword(f"{worker.name}: the ESL password is the placeholder {password!r}: set "
                                f"DISPATCHER_ESL_PASSWORD to the event socket password FreeSWITCH uses")
        return host, port, password

    def _esl_address(self, worker: WorkerStatus) -> tuple[str, int, str]:
        configured = self.settings.esl_workers.get(worker.duid or "")
        if configured:
            host, _, rest = configured.partition(":")
            port, _, password = rest.partition(":")
            return host, int(port or self.settings.esl_port), password or self.settings.esl_password
        if "esl" in worker.attrs:
            host, _, port = worker.attrs["esl"].rpartition(":")
            if host and port.isdigit():
                return host.strip("[]"), int(port), self.settings.esl_password
        return parse_uri(worker.uri).host, self.settings.esl_port, self.settings.esl_password

    async def count_calls(self, worker: WorkerStatus) -> int:
        host, port, password = self.esl_address(worker)
        worker.esl = f"{host}:{port}"
        return await self._count_calls(host, port, password, io_timeout=self.settings.esl_timeout)

    async def status(self, *, with_esl: bool = True) -> list[WorkerStatus]:
        workers = await self.workers()
        if with_esl:
            async def fill(w: WorkerStatus) -> None:
                try:
                    w.active_calls = await self.count_calls(w)
                except WorkerUnreachable as exc:
                    w.esl_error = str(exc)

            await asyncio.gather(*(fill(w) for w in workers))
        return workers

    @staticmethod
    def resolve(workers: list[WorkerStatus], name: str) -> WorkerStatus:
        for w in workers:
            if name in (w.duid, w.uri):
                return w
        for w in workers:
            if name == parse_uri(w.uri).hostport():
                return w
        known = ", ".join(w.name for w in workers) or "none"
        raise UnknownWorker(f"no worker {name!r} in dispatcher set (known: {known})")

    async def find(self, name: str) -> WorkerStatus:
        return self.resolve(await self.workers(), name)

    # ---------------------------------------------------------------- drain / enable

    def _persist_disabled(self, worker: WorkerStatus, disabled: bool) -> bool:
        """Mirror the admin-disabled flag into the list file, if this host has it. True if written."""
        path = self.settings.list_file
        if not path.exists():
            return False
        dlist = read_list(path)
        entry = dlist.find(self.settings.setid, worker.duid or worker.uri) or dlist.find(self.settings.setid,
                                                                                          worker.uri)
        if entry is None:
            return False
        # Enabling also sets the probing flag: the edge relies on probes to see a worker fail.
        flags = (entry.flags | FLAG_DISABLED) if disabled else ((entry.flags & ~FLAG_DISABLED) | FLAG_PROBING)
        if flags == entry.flags:
            return True
        entry.flags = flags
        write_list_atomically(path, dlist)
        return True

    async def drain(self, name: str) -> tuple[WorkerStatus, bool]:
        worker = await self.find(name)
        await self.rpc.set_state("d", self.settings.setid, worker.uri)
        persisted = self._persist_disabled(worker, True)
        return worker, persisted

    async def wait_drained(self, worker: WorkerStatus, limit_s: float,
                           progress: Callable[[int | None, float, str | None], None] | None = None,
                           clock: Callable[[], float] = time.monotonic) -> int:
        """Poll `show calls count` until zero; progress(calls, elapsed, error) after every poll."""
        start = clock()
        calls: int | None = None
        first = True
        while True:
            error = None
            try:
                calls = await self.count_calls(worker)
            except WorkerUnreachable as exc:
                if first:
                    raise  # nothing proves the calls are gone: say so at once
                error = str(exc)  # a blip while draining: keep trying until the timeout
            first = False
            elapsed = clock() - start
            if progress:
                progress(calls, elapsed, error)
            if calls == 0 and error is None:
                return 0
            if elapsed >= limit_s:
                raise DrainTimeout(worker.name, calls, limit_s)
            await asyncio.sleep(min(self.settings.poll_interval, max(limit_s - elapsed, 0.01)))

    async def enable(self, name: str) -> tuple[WorkerStatus, bool]:
        worker = await self.find(name)
        # Inactive + probing: the next OPTIONS probe that gets 2xx makes it active, so a worker that is
        # not really back never receives a call.
        await self.rpc.set_state("ip", self.settings.setid, worker.uri)
        persisted = self._persist_disabled(worker, False)
        return worker, persisted

    async def wait_active(self, worker: WorkerStatus, limit_s: float) -> WorkerStatus:
        deadline = time.monotonic() + limit_s
        while True:
            current = await self.find(worker.uri)
            if current.state == "active":
                return current
            if time.monotonic() >= deadline:
                raise NotActiveInTime(f"{worker.name}: not active after {limit_s:g} s "
                                      f"(state {current.flags}); its OPTIONS probes are failing")
            await asyncio.sleep(0.2)

    # ---------------------------------------------------------------- add / remove

    async def _reload_keeping_drains(self, before: list[WorkerStatus]) -> None:
        # dispatcher.reload rebuilds every destination from the file: re-apply runtime drains that
        # the file does not carry (a drain made where the list file was not reachable).
        disabled = {w.uri for w in before if w.state == "disabled"}
        await self.rpc.reload(reload_delta=self.settings.reload_delta)
        for w in await self.workers():
            if w.uri in disabled and w.state != "disabled":
                await self.rpc.set_state("d", self.settings.setid, w.uri)

    async def add(self, uri: str, duid: str, *, priority: int = 0, attrs: str = "") -> WorkerStatus:
        parse_uri(uri)
        validate_duid(duid)
        extra = parse_attrs(attrs) if attrs else {}
        extra.pop("duid", None)
        before = await self.workers()  # also proves Kamailio is reachable before touching the file
        path = self.settings.list_file
        dlist = read_list(path)
        dlist.add(Entry(self.settings.setid, uri, FLAG_PROBING, priority, {"duid": duid, **extra}))
        write_list_atomically(path, dlist)
        await self._reload_keeping_drains(before)
        return await self.find(duid)

    async def remove(self, name: str, *, force: bool = False) -> WorkerStatus:
        before = await self.workers()
        worker = self.resolve(before, name)
        if worker.state != "disabled" and not force:
            raise DispatcherError(f"{worker.name} is {worker.state}: drain it first "
                                  f"(dispatcher drain {worker.name} --wait) or use --force")
        path = self.settings.list_file
        dlist = read_list(path)
        entry = dlist.find(self.settings.setid, worker.duid or worker.uri) or dlist.find(self.settings.setid,
                                                                                          worker.uri)
        if entry is None:
            raise DispatcherError(f"{worker.name} is loaded in Kamailio but not in {path}; "
                                  "is DISPATCHER_LIST_FILE the file kamailio.cfg loads?")
        dlist.remove(entry)
        write_list_atomically(path, dlist)
        await self._reload_keeping_drains(before)
        return worker


__all__ = [
    "DispatcherError", "DrainTimeout", "EdgeControl", "KamailioRefused", "NotActiveInTime", "UnknownWorker",
    "WorkerStatus",
    "worker_from_dest",
]
