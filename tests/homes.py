"""Fresh msb homes for tests that share the session's snapshot templates (the ``session_templates`` fixture)."""

from __future__ import annotations

from pathlib import Path


def home_with_session_templates(home: Path, templates: Path) -> Path:
    """``home``, made, its ``snapshots`` the session's template cache."""
    home.mkdir(parents=True)
    (home / "snapshots").symlink_to(templates, target_is_directory=True)
    return home
