"""Sandboxes that outlive the process that asked for them (``msb create``, ``--msb-keep``): a detached owner process
(``_detached_owner``) creates the sandbox and relays its agent; callers reach it through ``Sandbox.get``."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pytest_microsandbox.errors import SandboxError
from pytest_microsandbox.sandbox._config import build_config
from pytest_microsandbox.sandbox._select import backend_for


def start_detached(home: Path, options: dict[str, Any]) -> str:
    """Start the owner process for a sandbox made from ``Sandbox.create`` keyword ``options``; returns its name once
    it is running (bad options are refused here, before any process starts)."""
    options = {**_create_defaults(), **options}
    config = build_config(**options)
    backend_for(config.isolation)  # a host that cannot run it says so here, as KvmUnavailableError
    wire = {**options, "name": config.name, "volumes": {p: m.to_dict() for p, m in config.volumes.items()},
            "vm": config.vm.to_dict()}
    owner = subprocess.Popen([sys.executable, "-m", "pytest_microsandbox.sandbox._detached_owner", str(home), "-"],
                             stdout=subprocess.PIPE, stdin=subprocess.PIPE, start_new_session=True,
                             env={**os.environ, "PYTHONPATH": _pythonpath()})
    assert owner.stdin is not None and owner.stdout is not None
    owner.stdin.write(json.dumps(wire).encode())  # on stdin, not argv: env values are nobody else's business
    owner.stdin.close()
    line = owner.stdout.readline().decode().strip()
    owner.stdout.close()
    verdict, _, detail = line.partition(" ")
    if verdict != "ready":
        code = owner.wait()  # it exits after reporting the error: reap it
        raise SandboxError(detail or f"the sandbox owner process exited ({code})")
    return detail


def _create_defaults() -> dict[str, Any]:
    """``Sandbox.create``'s keyword defaults (one source of truth), for callers that pass only some of them."""
    from pytest_microsandbox.sandbox._sandbox import Sandbox

    parameters = inspect.signature(Sandbox.create).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty and p.name != "home"}


def _pythonpath() -> str:
    """Our own package first, so the owner runs the same code as its caller (an editable or unpacked checkout)."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
