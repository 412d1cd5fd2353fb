"""A real PostgreSQL server for the record-store tests, started from Debian's `postgresql` package
(requirements/apt.txt) in a temporary directory, listening only on this helper's loopback address.

PostgreSQL refuses to run as root, so under root the server runs as the `postgres` system user the
package creates. Password authentication (scram-sha-256) even on loopback: no stranger gets in.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

PG_HOST = "127.0.0.161"
PG_USER = "gateway"
PG_PASSWORD = "records-test-password"


def pg_bin() -> Path | None:
    root = Path("/usr/lib/postgresql")
    versions = sorted((p for p in root.glob("*/bin/initdb")), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a DSN to a fresh database `records`; stops the server and removes its files after."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL not installed (requirements/apt.txt: postgresql)")
    base = Path(tempfile.mkdtemp(prefix="records-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, sock = base / "data", base / "sock"
    pwfile = base / "pw"
    run = dict(check=True, timeout=120, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        subprocess.run([*as_user, "mkdir", "-m", "700", str(sock)], **run)
        subprocess.run([*as_user, "sh", "-c", f"umask 077; echo '{PG_PASSWORD}' > {pwfile}"], **run)
        subprocess.run(
            [
                *as_user,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                PG_USER,
                "-A",
                "scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C.UTF-8",
            ],
            **run,
        )
        port = _free_port(PG_HOST)
        opts = (
            f"-c listen_addresses={PG_HOST} -p {port} -c unix_socket_directories={sock} "
            "-c fsync=off -c full_page_writes=off -c shared_buffers=16MB -c max_connections=40"
        )
        subprocess.run(
            [
                *as_user,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                opts,
                "-l",
                str(base / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            **run,
        )
        import psycopg

        admin = f"postgresql://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE records")
        yield f"postgresql://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{port}/records"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                timeout=60,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        shutil.rmtree(base, ignore_errors=True)
