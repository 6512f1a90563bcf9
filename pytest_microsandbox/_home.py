"""Where our state lives: ``--home``/``MSB_HOME``, else ``~/.microsandbox``."""

from __future__ import annotations

import os
from pathlib import Path


def msb_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser().absolute()
    env = os.environ.get("MSB_HOME")
    if env:
        return Path(env).expanduser().absolute()
    return Path.home() / ".microsandbox"
