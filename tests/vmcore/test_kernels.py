from __future__ import annotations

import pytest

from _vmcore.errors import KernelLoadError
from _vmcore.kernels import bundled_libkrunfw, find_kernel, system_libkrunfw


def make_package(root, versions):
    pkg = root / "fakemsb"
    lib = pkg / "_bundled" / "lib"
    lib.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    for v in versions:
        (lib / f"libkrunfw.so.{v}").write_bytes(b"\x7fELF")
    return pkg


def test_explicit_path_wins(tmp_path):
    k = tmp_path / "vmlinux"
    k.write_bytes(b"x")
    found = find_kernel(k)
    assert found.path == k and found.source == "explicit"


def test_a_missing_explicit_path_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(KernelLoadError, match="does not exist"):
        find_kernel(tmp_path / "typo.so")


def test_the_environment_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr("_vmcore.kernels._ldconfig_libkrunfw", lambda: [])
    monkeypatch.setenv("MSB_KERNEL", str(tmp_path / "typo.so"))  # a caller's setting: only the caller reads it
    (tmp_path / "libkrunfw.so.5").write_bytes(b"x")
    assert find_kernel(None, lib_dirs=[str(tmp_path)]).source == "system"


def test_system_dirs_pick_newest_version(tmp_path, monkeypatch):
    monkeypatch.setattr("_vmcore.kernels._ldconfig_libkrunfw", lambda: [])
    for v in ("4.9.0", "5.10.1", "5.6.1"):
        (tmp_path / f"libkrunfw.so.{v}").write_bytes(b"x")
    assert system_libkrunfw([str(tmp_path)]).name == "libkrunfw.so.5.10.1"


def test_bundled_copy_found_without_import(tmp_path, monkeypatch):
    make_package(tmp_path, ["5.6.1", "5.2.0"])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("_vmcore.kernels._ldconfig_libkrunfw", lambda: [])
    assert bundled_libkrunfw("fakemsb").name == "libkrunfw.so.5.6.1"
    found = find_kernel(None, lib_dirs=[str(tmp_path / "empty")], package="fakemsb")
    assert found.source == "microsandbox-wheel" and found.path.name == "libkrunfw.so.5.6.1"


def test_nothing_found(tmp_path, monkeypatch):
    monkeypatch.setattr("_vmcore.kernels._ldconfig_libkrunfw", lambda: [])
    with pytest.raises(KernelLoadError, match="no guest kernel found") as raised:
        find_kernel(None, lib_dirs=[str(tmp_path)], package="no_such_package_here")
    assert "msb" not in str(raised.value)  # the library adds how its users give one


def test_this_host_has_a_kernel():
    """The [kernel] extra is installed here: discovery must find libkrunfw."""
    found = find_kernel(None)
    assert found.path.name.startswith("libkrunfw.so.")
