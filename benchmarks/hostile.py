"""Hostile and careless clients of ``cmp-face serve``, for the load test (and the tests' bombs).

:class:`Attack` runs beside a valid load: it keeps ``stallers`` connections stalled (half inside
their headers, half after the headers and a few body bytes; each reopened as soon as the server
closes it) and sends hostile requests at a fixed rate, cycling through :data:`KINDS`. It records
what the server answered to each kind; nothing it sends may cost the valid load anything.
"""
from __future__ import annotations

import asyncio
import io
import json
import time
from collections import Counter

import numpy as np

# What each hostile request is and what a sound server answers it.
KINDS = {
    "flac_bomb": "a 100 KB FLAC of 35 minutes whose header hides its length (413 while decoding)",
    "garbage": "a body that starts like a WAV and is not one (400)",
    "huge_shape": "an infer request whose shape is [1, 1e30] (400)",
    "huge_length": "a request declaring a 1 GB body (413 before reading it)",
    "hang_up": "a client that resets its connection mid-body (499, no answer)",
}


def silent_flac_hiding_its_length(frames: int, rate: int = 16000) -> bytes:
    """A FLAC of ``frames`` zero samples (a few bytes per 4096) whose header says "length unknown"
    (STREAMINFO's total-samples field zeroed, as streaming encoders may write it)."""
    import soundfile as sf

    buf = io.BytesIO()
    block = np.zeros(1 << 20, np.int16)
    with sf.SoundFile(buf, "w", rate, 1, format="FLAC", subtype="PCM_16") as fh:
        for start in range(0, frames, block.size):
            fh.write(block[:frames - start])
    data = bytearray(buf.getvalue())
    assert data[:4] == b"fLaC"
    v = int.from_bytes(data[18:26], "big")  # 4 bits of bits-per-sample, then 36 bits of total samples
    data[18:26] = (v >> 36 << 36).to_bytes(8, "big")
    return bytes(data)


def _http(method: str, path: str, body: bytes = b"", headers: dict | None = None, length: int | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body) if length is None else length}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _status(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    """The status code of one answer and its headers ("closed" if the server closed without one)."""
    head = await reader.readuntil(b"\r\n\r\n")
    first, *rest = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in rest if line)}
    return first.split()[1], headers


class Attack:
    def __init__(self, port: int, infer_path: str, rate: float, stallers: int = 100) -> None:
        self.port = port
        self.infer_path = infer_path
        self.rate = rate
        self.stallers = stallers
        self.answers: dict[str, Counter] = {kind: Counter() for kind in KINDS}
        self.stalled_opened = 0
        self.stalled_answers: Counter = Counter()
        self._stop = asyncio.Event()
        self._bodies = {
            "flac_bomb": silent_flac_hiding_its_length(32 << 20),
            "garbage": b"RIFF\x10\x00\x00\x00WAVEjunk" * 64,
        }
        head = json.dumps({"inputs": [{"name": "samples", "datatype": "INT16", "shape": [1, 10 ** 30],
                                       "data": [0]}]}).encode()
        self._bodies["huge_shape"] = head

    async def _open(self):
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def _one(self, kind: str) -> None:
        try:
            reader, writer = await self._open()
        except OSError:
            self.answers[kind]["connect failed"] += 1
            return
        try:
            if kind == "huge_length":
                writer.write(_http("POST", "/predict", b"RIFF", length=10 ** 9))
            elif kind == "hang_up":
                writer.write(_http("POST", "/predict", b"RIFF....", length=1000))
                await writer.drain()
                await asyncio.sleep(0.1)
                writer.transport.abort()  # a reset, not a FIN
                self.answers[kind]["reset"] += 1
                return
            elif kind == "huge_shape":
                writer.write(_http("POST", self.infer_path, self._bodies[kind]))
            else:
                writer.write(_http("POST", "/predict", self._bodies[kind]))
            await writer.drain()
            code, headers = await asyncio.wait_for(_status(reader), 60)
            self.answers[kind][code + (" without Retry-After" if code == "503" and "retry-after" not in headers
                                       else "")] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            self.answers[kind][type(exc).__name__] += 1
        finally:
            writer.close()

    async def _staller(self, k: int) -> None:
        """One stalled connection at a time, reopened when the server closes it."""
        while not self._stop.is_set():
            try:
                reader, writer = await self._open()
            except OSError:
                await asyncio.sleep(0.1)
                continue
            self.stalled_opened += 1
            writer.write(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Le" if k % 2 else
                         _http("POST", "/predict", b"RIFF", length=100000))
            try:
                stop = asyncio.create_task(self._stop.wait())
                answer = asyncio.create_task(reader.read(12))
                done, _ = await asyncio.wait({stop, answer}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if answer in done:
                    data = answer.result()
                    self.stalled_answers[data[9:12].decode() if data.startswith(b"HTTP/1.1") else "closed"] += 1
                else:
                    answer.cancel()
            except OSError:
                self.stalled_answers["reset"] += 1
            finally:
                writer.close()

    async def run(self, seconds: float) -> dict:
        stallers = [asyncio.create_task(self._staller(k)) for k in range(self.stallers)]
        sent = []
        start = time.perf_counter()
        kinds = list(KINDS)
        for i in range(int(self.rate * seconds)):
            delay = start + i / self.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent.append(asyncio.create_task(self._one(kinds[i % len(kinds)])))
        await asyncio.gather(*sent)
        self._stop.set()
        await asyncio.gather(*stallers)
        return {"hostile_per_s": self.rate, "stallers": self.stallers, "stalled_connections_opened": self.stalled_opened,
                "stalled_answers": dict(self.stalled_answers),
                "hostile_answers": {kind: dict(c) for kind, c in self.answers.items()}}
