"""A progress bar over the steps of a long build, with the one-line messages kept above it."""
from __future__ import annotations

import sys
import threading
from typing import Callable

from tqdm import tqdm


class StepBar:
    """Call it with a message to print the message; ``step(message)`` also starts the next step.

    The bar goes to stderr and only to a terminal (tqdm's ``disable=None``); the messages are
    printed either way. A thread redraws it every second, so the elapsed time keeps moving
    through steps that take tens of seconds.
    """

    def __init__(self, total: int, progress: Callable[[str], None], desc: str = "building models",
                 rewrite: Callable[[str], str] = str) -> None:
        self.progress = progress
        self.rewrite = rewrite  # applied to every message (e.g. to name a final path, not a temporary one)
        self.bar = tqdm(total=total, desc=desc, file=sys.stderr, disable=None, leave=False, dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps [{elapsed}]")
        self._started = False
        self._stop = threading.Event()
        self._thread = None
        if not self.bar.disable:
            self._thread = threading.Thread(target=self._redraw, daemon=True)
            self._thread.start()

    def _redraw(self) -> None:
        while not self._stop.wait(1.0):
            self.bar.refresh()

    def __call__(self, message: str) -> None:
        self._print(self.progress, message)

    def step(self, message: str) -> None:
        if self._started:
            self.bar.update(1)
        self._started = True
        self._print(getattr(self.progress, "step", self.progress), message)  # nested bars pass it on

    def _print(self, progress: Callable[[str], None], message: str) -> None:
        if self.bar.disable:
            progress(self.rewrite(message))
            return
        with tqdm.external_write_mode(file=sys.stderr):
            progress(self.rewrite(message))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.bar.close()

    def __enter__(self) -> "StepBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def step(progress: Callable[[str], None], message: str) -> None:
    """Start a step of ``progress`` if it is a :class:`StepBar`, else just print the message."""
    getattr(progress, "step", progress)(message)
