"""ARCHITECTURE.md stays true: its layer table is read here and every import of the code is checked against it.

The rules: a module imports only its own unit and the units of the layers below its own (``_vmcore`` never
imports the library, and neither imports pytest); a face (the plugin, ``msb``) imports only the library's public
modules, never a private one (a dotted part starting with ``_``) nor ``_vmcore``, and never another face.
Imports inside functions and under ``TYPE_CHECKING`` count: they are dependencies too.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pytest_microsandbox", "_vmcore")
FACES_LAYER = "faces"


@dataclass(frozen=True)
class Layers:
    """The layer table: layer names top down, and the units (module or package names) of each."""

    order: tuple[str, ...]
    units: dict[str, str]  # unit -> its layer

    @classmethod
    def parse(cls, text: str) -> Layers:
        block = re.search(r"```layers\n(.*?)```", text, re.S)
        assert block, "ARCHITECTURE.md has no ```layers block"
        order, units = [], {}
        for line in block.group(1).splitlines():
            if line.strip():
                layer, _, names = line.partition(":")
                order.append(layer.strip())
                units.update({name: layer.strip() for name in names.split()})
        return cls(tuple(order), units)

    def unit_of(self, module: str) -> str | None:
        """The longest unit that is ``module`` or contains it (``pkg.__init__`` is the package's own module only)."""
        if f"{module}.__init__" in self.units:
            return f"{module}.__init__"
        parts = module.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in self.units:
                return ".".join(parts[:n])
        return None

    def rank(self, unit: str) -> int:
        return self.order.index(self.units[unit])  # 0: the top


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, is_cython: bool, known: set[str]) -> set[str]:
    """Every module a source file imports (absolute imports: the code has no relative ones); ``from pkg import
    name`` is ``pkg.name`` where that is one of the ``known`` modules, else ``pkg``."""
    if is_cython:  # not Python syntax: its import lines are enough
        lines = re.finditer(r"^\s*(?:from\s+([\w.]+)\s+c?import|c?import\s+([\w.]+))", source, re.M)
        return {match.group(1) or match.group(2) for match in lines}
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return found


def source_modules(root: Path) -> dict[str, tuple[str, bool]]:
    """Our modules under ``root``: name -> (source, is Cython). The guest's C sources are not Python."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.suffix in (".py", ".pyx", ".pxd") and "guest" not in path.relative_to(root).parts:
                modules[module_name(path, root)] = (path.read_text(), path.suffix != ".py")
    return modules


def violations(layers: Layers, modules: dict[str, tuple[str, bool]]) -> list[str]:
    known = set(modules)
    found = []
    for name, (source, is_cython) in modules.items():
        unit = layers.unit_of(name)
        if unit is None:
            found.append(f"{name}: in no layer of ARCHITECTURE.md")
            continue
        for target in sorted(imports_of(source, is_cython, known)):
            if target.split(".")[0] == "pytest" and layers.units[unit] != FACES_LAYER:
                found.append(f"{name} imports pytest: only the plugin may")
                continue
            if target.split(".")[0] not in {u.split(".")[0] for u in layers.units}:
                continue  # not ours
            other = layers.unit_of(target)
            if other is None or other == unit:
                continue
            if layers.units[unit] == FACES_LAYER:
                if layers.units[other] == FACES_LAYER:
                    found.append(f"{name} imports {target}: a face never imports another face")
                elif target.startswith("_vmcore") or any(p.startswith("_") for p in target.split(".")[1:]):
                    found.append(f"{name} imports {target}: a face imports the library's public modules only")
            elif layers.rank(other) <= layers.rank(unit):
                found.append(f"{name} imports {target}: upward or sideways, from {layers.units[unit]} to "
                             f"{layers.units[other]}")
    return found


@pytest.fixture(scope="module")
def layers() -> Layers:
    return Layers.parse((REPO / "ARCHITECTURE.md").read_text())


def test_every_import_follows_the_layers(layers: Layers) -> None:
    assert violations(layers, source_modules(REPO)) == []


FAKE_LAYERS = Layers.parse("""
```layers
faces: pkg.face
top: pkg.high
bottom: pkg.low pkg._private
```
""")


@pytest.mark.parametrize("module,source,complaint", [
    ("pkg.low", "from pkg.high import thing", "upward"),
    ("pkg.low", "def f():\n    import pkg.high\n", "upward"),  # a lazy import is a dependency too
    ("pkg.low", "if TYPE_CHECKING:\n    from pkg import high\n", "upward"),
    ("pkg.low", "import pkg._private", "sideways"),
    ("pkg.high", "import pytest", "only the plugin"),
    ("pkg.face", "from pkg._private import x", "public modules only"),
    ("pkg.face", "import _vmcore.kvm", "public modules only"),
])
def test_the_check_catches_a_deliberate_violation(module: str, source: str, complaint: str) -> None:
    modules = {"pkg.face": ("", False), "pkg.high": ("", False), "pkg.low": ("", False), "pkg._private": ("", False),
               "_vmcore.kvm": ("", True), module: (source, False)}
    layers = Layers(FAKE_LAYERS.order, {**FAKE_LAYERS.units, "_vmcore": "bottom"})
    found = violations(layers, modules)
    assert len(found) == 1 and complaint in found[0], found


def test_downward_and_public_imports_pass() -> None:
    modules = {"pkg.face": ("from pkg.high import x\nimport pytest", False), "pkg.high": ("import pkg.low", False),
               "pkg.low": ("import os", False), "pkg._private": ("", False)}
    assert violations(FAKE_LAYERS, modules) == []


def test_the_real_tree_fails_on_an_upward_import(layers: Layers) -> None:
    modules = source_modules(REPO)
    source, is_cython = modules["pytest_microsandbox.errors"]
    modules["pytest_microsandbox.errors"] = (source + "\nfrom pytest_microsandbox.sandbox import Sandbox\n", is_cython)
    assert violations(layers, modules) == [
        "pytest_microsandbox.errors imports pytest_microsandbox.sandbox: upward or sideways, from foundations to "
        "sandboxes"]
