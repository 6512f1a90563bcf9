"""What a failed test's report shows about its sandboxes."""

from __future__ import annotations

import shlex

from pytest_microsandbox.sandbox import Sandbox

_MAX_OUTPUT = 8000  # characters of stdout/stderr kept in a report section


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_OUTPUT else f"... ({len(text) - _MAX_OUTPUT} characters cut)\n" + \
        text[-_MAX_OUTPUT:]


def sandbox_sections(sandbox: Sandbox) -> list[tuple[str, str]]:
    """(title, text) report sections: the guest console tail, then the last command and its output."""
    sections = []
    try:
        console = sandbox.console_tail()
    except OSError as err:
        console = f"(console unavailable: {err})"
    sections.append((f"microsandbox {sandbox.name}: console tail", console or "(empty)"))
    last = sandbox.last_exec
    if last is not None:
        outcome = "timed out" if last.timed_out else f"exit code {last.exit_code}"
        sections.append((f"microsandbox {sandbox.name}: last exec", f"$ {shlex.join(last.argv)}\n{outcome}"))
        sections.append((f"microsandbox {sandbox.name}: last exec stdout", _clip(last.stdout) or "(empty)"))
        sections.append((f"microsandbox {sandbox.name}: last exec stderr", _clip(last.stderr) or "(empty)"))
    return sections
