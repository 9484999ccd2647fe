"""A small load generator for the lookup service: keep-alive HTTP/1.1 over asyncio.

Tens of microseconds a request, so the generator is not what is measured. `open_loop`
sends on a fixed schedule and times each request from its *scheduled* send time, so a
stalled server cannot hide its queue (no coordinated omission); `closed_loop` runs N
clients back to back (the capacity).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Connection:
    """One keep-alive HTTP/1.1 connection; `request` returns the status code."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        return cls(*await asyncio.open_connection(host, port))

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        await self.writer.drain()
        status = int((await self.reader.readline()).split(b" ", 2)[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            while size := int((await self.reader.readline()).strip(), 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readline()
        else:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


def post(path: str, body: dict[str, Any], token: str | None = None) -> bytes:
    payload = json.dumps(body).encode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n{auth}"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


@dataclass
class Run:
    """Latencies (seconds) and outcomes of one scenario."""

    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    server_cpu_s: float = 0.0  # CPU the server used meanwhile (all threads, all workers)
    client_cpu_s: float = 0.0  # CPU this generator used meanwhile

    def summary(self) -> dict[str, float]:
        lat = np.asarray(self.latencies) * 1000
        done = len(lat)
        pct = np.percentile(lat, [50, 90, 99]) if done else [np.nan] * 3
        return {
            f"{self.name}_requests": done,
            f"{self.name}_req_per_s": round(done / max(self.seconds, 1e-9), 1),
            f"{self.name}_p50_ms": round(float(pct[0]), 2),
            f"{self.name}_p90_ms": round(float(pct[1]), 2),
            f"{self.name}_p99_ms": round(float(pct[2]), 2),
            f"{self.name}_max_ms": round(float(lat.max()), 2) if done else float("nan"),
            f"{self.name}_errors": self.errors,
            f"{self.name}_load_avg_1m": round(self.load_avg[0], 2),
            f"{self.name}_server_cpu_ms_per_req": round(1000 * self.server_cpu_s / max(done, 1), 3),
            f"{self.name}_client_cpu_ms_per_req": round(1000 * self.client_cpu_s / max(done, 1), 3),
        }


async def _send(pool: asyncio.Queue, raw: bytes, run: Run, t_from: float) -> None:
    conn = await pool.get()
    try:
        status = await conn.request(raw)
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
        run.errors += 1
        pool.put_nowait(conn)  # the caller replaces broken connections at the end
        return
    run.latencies.append(time.perf_counter() - t_from)
    run.statuses[status] = run.statuses.get(status, 0) + 1
    if status != 200:
        run.errors += 1
    pool.put_nowait(conn)


async def open_loop(
    host: str, port: int, requests: list[bytes], rate: float, seconds: float, conns: int, name: str
) -> Run:
    """Send at `rate` per second on a fixed schedule; latency from the scheduled time."""
    pool: asyncio.Queue = asyncio.Queue()
    opened = [await Connection.open(host, port) for _ in range(conns)]
    for conn in opened:
        pool.put_nowait(conn)
    run, tasks = Run(name), []
    n = int(rate * seconds)
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_send(pool, requests[i % len(requests)], run, due)))
    await asyncio.gather(*tasks)
    run.seconds = time.perf_counter() - start
    run.load_avg = os.getloadavg()
    for conn in opened:
        conn.close()
    return run


async def closed_loop(
    host: str, port: int, requests: list[bytes], seconds: float, conns: int, name: str
) -> Run:
    """`conns` clients, each sending its next request as soon as the last one returned."""
    run = Run(name)
    stop = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        conn = await Connection.open(host, port)
        i = offset
        while time.perf_counter() < stop:
            t = time.perf_counter()
            status = await conn.request(requests[i % len(requests)])
            run.latencies.append(time.perf_counter() - t)
            run.errors += status != 200
            i += conns
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(j) for j in range(conns)))
    run.seconds = time.perf_counter() - start
    run.load_avg = os.getloadavg()
    return run
