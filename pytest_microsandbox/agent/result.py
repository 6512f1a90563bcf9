"""What an exec returns."""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ExecResult:
    """The outcome of one command: ``exit_code`` when it exited, ``signal`` when a signal killed it.

    ``stdout``/``stderr`` are decoded as UTF-8 (invalid bytes replaced); the exact bytes are in
    ``stdout_bytes``/``stderr_bytes``. ``duration`` is seconds from the request to the exit report.
    """

    exit_code: int | None
    stdout: str
    stderr: str
    signal: int | None
    duration: float
    stdout_bytes: bytes = field(default=b"", repr=False)
    stderr_bytes: bytes = field(default=b"", repr=False)
    timed_out: bool = False
    pid: int | None = None

    @property
    def ok(self) -> bool:
        """Whether it exited with code 0."""
        return self.exit_code == 0

    def describe(self) -> str:
        """How it ended, in words: "exit code 1", "killed by SIGKILL (timed out)"."""
        if self.signal is not None:
            try:
                name = _signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            how = f"killed by {name}"
        else:
            how = f"exit code {self.exit_code}"
        return how + (" (timed out)" if self.timed_out else "")
