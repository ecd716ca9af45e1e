"""The server under test: ``cmp-face serve`` in a process of its own (benchmarks.server_process),
and the bodies the tests send it."""
from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

from benchmarks.server_process import ServerProcess


class Server(ServerProcess):
    def __init__(self, models: Path, *options: str) -> None:
        super().__init__(models, "--workers", "2", "--threads", "1", *options, ready_s=60)

    def client(self):
        import tritonclient.http as th

        return th.InferenceServerClient(f"127.0.0.1:{self.port}")


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def speech(seconds: float = 3.0) -> np.ndarray:
    from runtime.demo_signal import demo_voice

    return demo_voice(seconds)


def error_of(response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]
