"""CPU and memory of the processes under test, from /proc (psutil), sampled while a load runs."""

from __future__ import annotations

import asyncio
import contextlib
import time


def find_listener_pid(port: int) -> int | None:
    import psutil

    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return conn.pid
    return None


class ResourceSampler:
    """CPU (user+system, children included) and RSS of one process, sampled from /proc."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        import psutil

        self.proc = psutil.Process(pid)   # raises psutil.NoSuchProcess for a wrong pid
        self.interval = interval
        self.series: list[tuple[float, float, float]] = []   # (t since start, cpu %, rss MB)
        self.cpu_end = 0.0
        self.cpu_start = self._cpu()
        self.t_start = time.monotonic()
        self.cpu_end = self.cpu_start
        self.peak_rss_mb = 0.0

    def _cpu(self) -> float:
        import psutil

        try:
            t = self.proc.cpu_times()
            # children_* hold the CPU of children already reaped (short-lived helpers)
            total = t.user + t.system + t.children_user + t.children_system
            for child in self.proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    ct = child.cpu_times()
                    total += ct.user + ct.system
            return total
        except psutil.Error:
            return self.cpu_end

    def _rss_mb(self) -> float:
        import psutil

        try:
            return self.proc.memory_info().rss / 1e6
        except psutil.Error:
            return 0.0

    async def run(self) -> None:
        last_cpu, last_t = self.cpu_start, self.t_start
        while True:
            await asyncio.sleep(self.interval)
            cpu, now, rss = self._cpu(), time.monotonic(), self._rss_mb()
            self.series.append((now - self.t_start, 100.0 * (cpu - last_cpu) / max(now - last_t, 1e-6), rss))
            self.peak_rss_mb = max(self.peak_rss_mb, rss)
            self.cpu_end = cpu
            last_cpu, last_t = cpu, now

    def summary(self) -> dict:
        wall = max(time.monotonic() - self.t_start, 1e-6)
        cpu_s = self.cpu_end - self.cpu_start
        return {"pid": self.proc.pid, "cpu_seconds": round(cpu_s, 3), "wall_seconds": round(wall, 3),
                "cpu_percent_mean": round(100 * cpu_s / wall, 1),
                "cpu_percent_max": round(max((c for _, c, _ in self.series), default=0.0), 1),
                "rss_mb_peak": round(self.peak_rss_mb, 1),
                "rss_mb_start": round(self.series[0][2], 1) if self.series else None,
                "series": [(round(t, 2), round(c, 1), round(r, 1)) for t, c, r in self.series]}


def samplers_for(pids: dict[str, int]) -> tuple[dict[str, ResourceSampler], dict[str, str]]:
    """Samplers for the processes that exist; a note for each that does not."""
    import psutil

    samplers: dict[str, ResourceSampler] = {}
    notes: dict[str, str] = {}
    for name, pid in pids.items():
        try:
            samplers[name] = ResourceSampler(pid)
        except (psutil.Error, ValueError) as exc:
            notes[name] = f"pid {pid} not measured: {type(exc).__name__}"
    return samplers, notes
