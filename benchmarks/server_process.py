"""``cmp-face serve`` in a process of its own on 127.0.0.1, ready when returned (the load test and
the tests start it the same way)."""
from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.machine import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m runtime.serve --models MODELS --port <free> [options]``; its output is kept
    (:meth:`output`). Raises RuntimeError naming the output when it exits or is not ready in time."""

    def __init__(self, models: Path, *options: str, ready_s: float = 120.0) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = io.BytesIO()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.serve", "--models", str(models), "--host", "127.0.0.1",
             "--port", str(self.port), *options], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not become ready in {ready_s:g} s: {self.output()}")

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.log.write(line)

    def output(self) -> str:
        return self.log.getvalue().decode(errors="replace")

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (a graceful drain), then SIGKILL after ``timeout_s``; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
