"""What building the test session's synthetic models printed (the conftest fixture fills it)."""
from __future__ import annotations


class BuildLog(list):
    """Records the build's messages; ``step`` marks where the progress bar advances."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[str] = []

    def __call__(self, message: str) -> None:
        self.append(message)

    def step(self, message: str) -> None:
        self.append(message)
        self.steps.append(message)


BUILD_LOG = BuildLog()  # what building the session's synthetic models printed
