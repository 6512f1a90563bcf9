"""Image reference parsing: registry names with Docker Hub defaults, local sources, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_microsandbox.errors import InvalidConfigError
from pytest_microsandbox.images import (
    DockerArchiveRef,
    HostRef,
    OciLayoutRef,
    RegistryRef,
    RootfsDirRef,
    parse_reference,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "expected"), [
    ("python", RegistryRef("docker.io", "library/python", "latest")),
    ("python:3.12", RegistryRef("docker.io", "library/python", "3.12")),
    ("user/app:v1", RegistryRef("docker.io", "user/app", "v1")),
    ("docker.io/python", RegistryRef("docker.io", "library/python", "latest")),
    ("index.docker.io/library/python:3", RegistryRef("docker.io", "library/python", "3")),
    ("localhost/app", RegistryRef("localhost", "app", "latest")),
    ("localhost:5000/team/app:1.0-rc", RegistryRef("localhost:5000", "team/app", "1.0-rc")),
    ("127.0.0.1:5000/a/b/c", RegistryRef("127.0.0.1:5000", "a/b/c", "latest")),
    ("ghcr.io/o/r@" + DIGEST, RegistryRef("ghcr.io", "o/r", None, DIGEST)),
    ("ghcr.io/o/r:tag@" + DIGEST, RegistryRef("ghcr.io", "o/r", "tag", DIGEST)),
    ("[::1]:5000/x", RegistryRef("[::1]:5000", "x", "latest")),
    ("my-registry.example.com:443/a_b/c__d/e-f", RegistryRef("my-registry.example.com:443", "a_b/c__d/e-f", "latest")),
])
def test_registry_references(text, expected):
    assert parse_reference(text) == expected


def test_registry_reference_properties():
    ref = parse_reference("python:3.12")
    assert ref.api_host == "registry-1.docker.io" and ref.manifest_ref == "3.12"
    assert str(ref) == "docker.io/library/python:3.12"
    pinned = parse_reference(f"localhost:5000/x@{DIGEST}")
    assert pinned.api_host == "localhost:5000" and pinned.manifest_ref == DIGEST


def test_local_sources_and_host(tmp_path):
    assert parse_reference(f"oci:{tmp_path}") == OciLayoutRef(tmp_path)
    assert parse_reference(f"oci:{tmp_path}:v2") == OciLayoutRef(tmp_path, "v2")
    assert parse_reference(f"docker-archive:{tmp_path}/img.tar") == DockerArchiveRef(tmp_path / "img.tar")
    assert parse_reference(f"dir:{tmp_path}") == RootfsDirRef(tmp_path)
    assert parse_reference("dir:relative").path == Path("relative").absolute()
    assert parse_reference("host") == HostRef()


@pytest.mark.parametrize("text", [
    "", " python", "Python:3", "python:", "python:bad tag", "python@sha256:abc", "python@md5:" + "a" * 32,
    "a//b", "-lead/x", "localhost:5000/UPPER", "python:" + "x" * 200, "oci:", "dir:", "docker-archive:",
    "exa_mple.com/x/y", "example.com:99999999/x",
])
def test_invalid_references(text):
    with pytest.raises(InvalidConfigError):
        parse_reference(text)
