"""``--msb-cov``: measure Python that runs inside sandboxes (``host`` image) and add it to the host's coverage data.

Each sandbox gets a read-only ``sitecustomize.py`` that starts coverage in every Python process, an rcfile mirroring
the measurement settings of the run (branch, source, omit: data of different kinds cannot be combined), a directory
of ours read-write for the guest's data files (never the project's own directory, which the guest sees read-only), and
the project's root at its own path, so that the code and its recorded paths are the same inside and out. At the end of
the run the controller combines the guest files into the host's data file.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import coverage

from pytest_microsandbox.mounts import MountConfig
from pytest_microsandbox.sync import Volume

GUEST_DIR = "/run/msb-cov"
GUEST_SITE = f"{GUEST_DIR}/site"
GUEST_DATA = f"{GUEST_DIR}/data"
_SITECUSTOMIZE = "import coverage\n\ncoverage.process_startup()\n"


@dataclass(frozen=True)
class GuestCoverage:
    support_dir: Path  # host: sitecustomize.py and the guest rcfile
    data_file: Path  # host: the coverage data file guest data is combined into
    project_root: Path

    @classmethod
    def prepare(cls, support_dir: Path, project_root: Path) -> GuestCoverage:
        # The settings of the coverage measuring this run (pytest-cov's, with its --cov-branch) when there is one.
        host_config = (coverage.Coverage.current() or coverage.Coverage()).config
        data_file = Path(host_config.data_file).absolute()
        lines = ["[run]", "parallel = True", f"data_file = {GUEST_DATA}/guest", f"branch = {bool(host_config.branch)}"]
        if host_config.source:
            lines.append("source =\n" + "".join(f"    {s}\n" for s in host_config.source).rstrip())
        if host_config.run_omit:
            lines.append("omit =\n" + "".join(f"    {s}\n" for s in host_config.run_omit).rstrip())
        (support_dir / "data").mkdir(parents=True, exist_ok=True)
        _write_atomically(support_dir / "site" / "sitecustomize.py", _SITECUSTOMIZE)  # xdist workers race here
        _write_atomically(support_dir / "coveragerc", "\n".join(lines) + "\n")
        return cls(support_dir, data_file, project_root)

    def apply(self, options: dict[str, Any]) -> None:
        """Add what the guest needs to a sandbox's options (its own mounts and env win where they overlap)."""
        volumes: dict[str, MountConfig] = dict(options.get("volumes") or {})
        wanted = {
            GUEST_SITE: Volume.bind(self.support_dir / "site", readonly=True),
            f"{GUEST_DIR}/rc": Volume.bind(self.support_dir, readonly=True),
            GUEST_DATA: Volume.bind(self.support_dir / "data"),
            str(self.project_root): Volume.bind(self.project_root, readonly=True),
        }
        for guest_path, mount in wanted.items():
            volumes.setdefault(guest_path, mount)
        env = dict(options.get("env") or {})
        env.setdefault("COVERAGE_PROCESS_START", f"{GUEST_DIR}/rc/coveragerc")
        env["PYTHONPATH"] = ":".join(p for p in (GUEST_SITE, env.get("PYTHONPATH")) if p)
        options["volumes"], options["env"] = volumes, env
        options.setdefault("workdir", str(self.project_root))

    def combine(self) -> int:
        """Fold the guest data files into the host's data file, then drop our support files; returns how many
        guest files were combined."""
        files = sorted(str(p) for p in (self.support_dir / "data").glob("guest.*"))
        if files:
            host = coverage.Coverage(data_file=str(self.data_file))
            host.load()
            host.combine(files, strict=False, keep=False)
            host.save()
        shutil.rmtree(self.support_dir, ignore_errors=True)
        return len(files)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)
