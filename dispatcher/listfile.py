"""The Kamailio dispatcher list file: parse, validate, render (pure), and replace it atomically.

Format (Kamailio dispatcher module, `list_file`), one destination per line::

    setid uri flags priority attrs
    1 sip:10.0.0.11:5080 8 0 duid=fs1;maxload=400;esl=10.0.0.11:8021

Comment lines (``#``) and blank lines are kept where they are, so the header Ansible renders survives
`dispatcher add|remove`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# Dispatcher list flags (README "Destination List File").
FLAG_INACTIVE = 1
FLAG_TRYING = 2
FLAG_DISABLED = 4
FLAG_PROBING = 8

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_URI = re.compile(r"^sip:(?P<host>\[[0-9A-Fa-f:.]+\]|[^:;\[\]@]+)(:(?P<port>\d{1,5}))?"
                  r"(?P<params>(;[A-Za-z0-9_.=-]+)*)$")
_DUID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TRANSPORTS = {"udp", "tcp", "tls", "sctp"}


class ListError(ValueError):
    """A dispatcher list or a destination in it is invalid; the message says which and why."""


@dataclass(frozen=True)
class WorkerUri:
    host: str
    port: int
    transport: str | None

    def hostport(self) -> str:
        return f"{self.host}:{self.port}"


def parse_uri(uri: str) -> WorkerUri:
    """Validate a worker URI: ``sip:host[:port][;transport=udp|tcp|tls]`` with no user part."""
    match = _URI.match(uri.strip())
    if not match or uri != uri.strip():
        raise ListError(f"invalid worker URI {uri!r}: expected sip:host[:port][;transport=udp|tcp|tls]")
    host = match.group("host")
    bare = host[1:-1] if host.startswith("[") else host
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        if host.startswith("[") or not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
            raise ListError(f"invalid worker URI {uri!r}: {host!r} is neither an IP address nor a hostname") \
                from None
    port = int(match.group("port") or 5060)
    if not 1 <= port <= 65535:
        raise ListError(f"invalid worker URI {uri!r}: port {port} out of range")
    transport = None
    for param in filter(None, match.group("params").split(";")):
        name, _, value = param.partition("=")
        if name.lower() == "transport":
            if value.lower() not in _TRANSPORTS:
                raise ListError(f"invalid worker URI {uri!r}: unknown transport {value!r}")
            transport = value.lower()
        elif name.lower() != "lr":
            raise ListError(f"invalid worker URI {uri!r}: unexpected parameter {param!r}")
    return WorkerUri(bare, port, transport)


def validate_duid(duid: str) -> str:
    if not _DUID.match(duid):
        raise ListError(f"invalid worker id {duid!r}: letters, digits, '.', '_' or '-', at most 64")
    return duid


def parse_attrs(text: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for item in filter(None, text.split(";")):
        name, sep, value = item.partition("=")
        if not sep or not name or any(c.isspace() for c in item):
            raise ListError(f"invalid attribute {item!r}: expected name=value with no spaces")
        attrs[name] = value
    return attrs


def render_attrs(attrs: dict[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in attrs.items())


@dataclass
class Entry:
    setid: int
    uri: str
    flags: int = FLAG_PROBING
    priority: int = 0
    attrs: dict[str, str] = field(default_factory=dict)
    # The line as read: an entry nobody changed is written back byte for byte (minimal diffs).
    raw: str | None = field(default=None, compare=False, repr=False)
    _read_as: tuple[object, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def duid(self) -> str | None:
        return self.attrs.get("duid")

    def _key(self) -> tuple[object, ...]:
        return (self.setid, self.uri, self.flags, self.priority, tuple(self.attrs.items()))

    def render(self) -> str:
        if self.raw is not None and self._read_as == self._key():
            return self.raw
        line = f"{self.setid} {self.uri} {self.flags} {self.priority}"
        return f"{line} {render_attrs(self.attrs)}" if self.attrs else line


@dataclass
class DispatcherList:
    """Lines in file order: each is either an Entry or a verbatim comment/blank line."""

    lines: list[Entry | str] = field(default_factory=list)

    @property
    def entries(self) -> list[Entry]:
        return [line for line in self.lines if isinstance(line, Entry)]

    def find(self, setid: int, worker: str) -> Entry | None:
        """By duid, exact URI, or host:port."""
        for entry in self.entries:
            if entry.setid != setid:
                continue
            if worker in (entry.duid, entry.uri) or worker == parse_uri(entry.uri).hostport():
                return entry
        return None

    def add(self, entry: Entry) -> None:
        new = parse_uri(entry.uri)
        if entry.duid is None:
            raise ListError("a worker needs a duid (worker id)")
        validate_duid(entry.duid)
        for other in self.entries:
            if other.setid != entry.setid:
                continue
            if other.duid == entry.duid:
                raise ListError(f"worker id {entry.duid!r} is already in set {entry.setid} ({other.uri})")
            if parse_uri(other.uri) == new:
                raise ListError(f"{entry.uri} is already in set {entry.setid} as {other.duid!r}")
        self.lines.append(entry)

    def remove(self, entry: Entry) -> None:
        self.lines.remove(entry)

    def render(self) -> str:
        return "".join((line.render() if isinstance(line, Entry) else line) + "\n" for line in self.lines)


def parse_list(text: str) -> DispatcherList:
    result = DispatcherList()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            result.lines.append(raw)
            continue
        fields = line.split()
        if len(fields) < 2 or len(fields) > 5:
            raise ListError(f"line {number}: expected 'setid uri [flags [priority [attrs]]]', got {raw!r}")
        try:
            setid = int(fields[0])
            flags = int(fields[2]) if len(fields) > 2 else 0
            priority = int(fields[3]) if len(fields) > 3 else 0
        except ValueError:
            raise ListError(f"line {number}: setid, flags and priority must be integers: {raw!r}") from None
        try:
            parse_uri(fields[1])
            attrs = parse_attrs(fields[4]) if len(fields) > 4 else {}
        except ListError as exc:
            raise ListError(f"line {number}: {exc}") from None
        entry = Entry(setid, fields[1], flags, priority, attrs, raw=raw)
        entry._read_as = entry._key()
        result.lines.append(entry)
    return result


def read_list(path: Path) -> DispatcherList:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ListError(f"dispatcher list {path} does not exist") from None
    try:
        return parse_list(text)
    except ListError as exc:
        raise ListError(f"{path}: {exc}") from None


def write_list_atomically(path: Path, dlist: DispatcherList) -> None:
    """Replace the file in one rename, so Kamailio never reads half a list. Keeps mode and owner."""
    text = dlist.render()
    parse_list(text)  # never write what we could not read back
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if st is not None:
            os.chmod(tmp, st.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
