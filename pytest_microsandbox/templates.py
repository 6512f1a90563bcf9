"""The snapshot templates vm sandboxes start from (``<home>/snapshots``): one per configuration (kernel, image,
memory, vCPUs, device slots), built by the first sandbox of it. ``msb snapshot ls|rm|prune`` manage them here."""

from __future__ import annotations

from pathlib import Path

from _vmcore.template_cache import Template, TemplateCache
from pytest_microsandbox._error_boundary import vmcore_errors

__all__ = ["Template", "Templates", "templates_dir"]


def templates_dir(home: Path) -> Path:
    """Where the templates of the state directory ``home`` are kept."""
    return home / "snapshots"


class Templates:
    """The templates of one state directory. Errors are ours (SandboxError), never the VMM core's."""

    def __init__(self, home: Path) -> None:
        self._cache = TemplateCache(templates_dir(home))

    def list(self) -> list[Template]:
        """Every template, with its key (image digest, memory, vCPUs, ...), size on disk and times."""
        with vmcore_errors():
            return self._cache.entries()

    def remove(self, template_id: str) -> None:
        """Remove one template by its full id; one a sandbox is being restored from waits for it."""
        with vmcore_errors():
            self._cache.remove(template_id)

    def prune(self, keep: int = 0) -> list[str]:
        """Remove all but the ``keep`` most recently used; returns the ids removed."""
        with vmcore_errors():
            return self._cache.prune(keep=keep)
