"""Pulls from a real registry (Debian's docker-registry on loopback): by tag, by digest, through an index."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _oci_testkit import Entry, image, layer, push_image, push_index

from pytest_microsandbox.errors import ImageError
from pytest_microsandbox.images import Platform, pull_image


def _debugfs(disk: Path, command: str) -> str:
    return subprocess.run(["debugfs", "-R", command, str(disk)], capture_output=True, text=True, check=True).stdout


def _cat(disk: Path, path: str) -> bytes:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(disk)], capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def pushed(registry):
    """Two images under one index (amd64 with a gzip and a zstd layer, arm64 with one), plus a plain tag."""
    base = layer([Entry("etc", "dir", mode=0o755), Entry("etc/os-release", data=b"ID=msbtest\n"),
                  Entry("bin", "dir", mode=0o755), Entry("bin/tool", data=b"#!/bin/sh\n", mode=0o755)], "gzip")
    top = layer([Entry("etc/os-release", data=b"ID=msbtest-v2\n"), Entry("app", "dir", mode=0o755),
                 Entry("app/main.py", data=b"print(4)\n", uid=1000, gid=1000),
                 Entry("bin/.wh.tool")], "zstd")
    amd64 = image([base, top], env=["PATH=/usr/bin", "LANG=C.UTF-8"], cmd=["python3", "main.py"],
                  entrypoint=["/bin/sh", "-c"], workdir="/app", user="1000:1000")
    arm64 = image([layer([Entry("arch", data=b"arm64\n")], "gzip")], arch="arm64")
    push_index(registry.url, "msb/multi", "v1", {"linux/amd64": amd64, "linux/arm64/v8": arm64})
    push_image(registry.url, "msb/single", "latest", amd64)
    return {"amd64": amd64, "arm64": arm64}


def test_pull_through_index_picks_host_platform_and_applies_layers(registry, pushed, home):
    img = pull_image(f"{registry.host}/msb/multi:v1", home=home, platform=Platform("linux", "amd64"))
    assert img.digest == pushed["amd64"].manifest.digest
    assert img.layers == tuple(b.digest for b in pushed["amd64"].layers)
    assert _cat(img.disk, "/etc/os-release") == b"ID=msbtest-v2\n"
    assert "tool" not in _debugfs(img.disk, "ls /bin")  # whited out by the zstd layer
    assert (img.rootfs / "app" / "main.py").read_bytes() == b"print(4)\n"
    assert f"{registry.host}/msb/multi:v1" in img.references
    stat = _debugfs(img.disk, "stat /app/main.py")
    assert "User:  1000   Group:  1000" in stat


def test_pull_other_platform_from_the_index(registry, pushed, home):
    img = pull_image(f"{registry.host}/msb/multi:v1", home=home, platform=Platform("linux", "arm64", "v8"))
    assert img.digest == pushed["arm64"].manifest.digest
    assert _cat(img.disk, "/arch") == b"arm64\n"


def test_platform_missing_from_index_is_an_image_error(registry, pushed, home):
    with pytest.raises(ImageError, match=r"no image for platform linux/s390x .*linux/amd64"):
        pull_image(f"{registry.host}/msb/multi:v1", home=home, platform=Platform("linux", "s390x"))


def test_pull_by_digest_and_config_is_typed(registry, pushed, home):
    digest = pushed["amd64"].manifest.digest
    img = pull_image(f"{registry.host}/msb/single@{digest}", home=home)
    assert img.digest == digest
    cfg = img.config
    assert cfg.env == {"PATH": "/usr/bin", "LANG": "C.UTF-8"}
    assert cfg.cmd == ("python3", "main.py") and cfg.entrypoint == ("/bin/sh", "-c")
    assert cfg.argv == ("/bin/sh", "-c", "python3", "main.py")
    assert (cfg.working_dir, cfg.user, cfg.architecture) == ("/app", "1000:1000", "amd64")


def test_pull_by_index_digest_resolves_platform(registry, pushed, home):
    from _oci_testkit import index

    idx = index({"linux/amd64": pushed["amd64"], "linux/arm64/v8": pushed["arm64"]})
    img = pull_image(f"{registry.host}/msb/multi@{idx.digest}", home=home, platform=Platform("linux", "amd64"))
    assert img.digest == pushed["amd64"].manifest.digest


def test_second_pull_reuses_cache_and_one_disk_per_digest(registry, pushed, home):
    first = pull_image(f"{registry.host}/msb/single:latest", home=home)
    second = pull_image(f"{registry.host}/msb/multi:v1", home=home, platform=Platform("linux", "amd64"))
    assert first.disk == second.disk and first.digest == second.digest
    assert set(second.references) == {f"{registry.host}/msb/single:latest", f"{registry.host}/msb/multi:v1"}
    assert oct(first.disk.stat().st_mode & 0o777) == "0o444"
    again = pull_image(f"{registry.host}/msb/single:latest", home=home, policy="missing")
    assert again.digest == first.digest


def test_unknown_tag_and_repository_are_image_errors(registry, pushed, home):
    with pytest.raises(ImageError, match="not found"):
        pull_image(f"{registry.host}/msb/single:nope", home=home)
    with pytest.raises(ImageError, match="not found"):
        pull_image(f"{registry.host}/msb/absent:latest", home=home)


def test_unreachable_registry_retries_then_image_error(home):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ImageError, match=r"cannot reach .* \(after \d+ attempts\)"):
        pull_image(f"127.0.0.1:{port}/msb/x:1", home=home)


def test_corrupted_blob_fails_naming_digest_and_leaves_nothing(registry, home):
    bad = layer([Entry("corrupt-me", data=b"A" * 4096)], "gzip")
    good = layer([Entry("fine", data=b"ok")], "gzip")
    img = image([good, bad])
    push_image(registry.url, "msb/corrupt", "v1", img)
    blob_file = registry.blob_file(bad.digest)
    data = bytearray(blob_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob_file.write_bytes(bytes(data))
    with pytest.raises(ImageError) as info:
        pull_image(f"{registry.host}/msb/corrupt:v1", home=home)
    assert bad.digest in str(info.value)
    images = home / "images"
    assert not (images / "blobs" / "sha256" / bad.digest.split(":")[1]).exists()
    assert not [p for p in (images / "blobs" / "sha256").iterdir() if p.name.startswith(".tmp")]
    assert list((images / "store").iterdir()) == []
    assert list((images / "tmp").iterdir()) == []
    assert list((images / "refs").iterdir()) == []


def test_token_auth_with_docker_config_credentials(auth_registry, registry, pushed, home, docker_config):
    auth = base64.b64encode(b"tester:s3cret").decode()
    docker_config.write_text(json.dumps({"auths": {auth_registry.host: {"auth": auth}}}))
    img = pull_image(f"{auth_registry.host}/msb/single:latest", home=home)
    assert img.digest == pushed["amd64"].manifest.digest
    assert auth_registry.tokens_issued >= 1
    kinds = {kind for path, kind in auth_registry.requests if "/blobs/" in path}
    assert kinds == {"Bearer"}  # every blob fetched with the token (after a possible first challenge: none here)


def test_token_auth_without_credentials_is_refused(auth_registry, pushed, home):
    with pytest.raises(ImageError, match="token request refused"):
        pull_image(f"{auth_registry.host}/msb/single:latest", home=home)


_CONCURRENT = textwrap.dedent("""
    import sys, time, pathlib
    from pytest_microsandbox.images import pull_image
    ready, go = pathlib.Path(sys.argv[3]), pathlib.Path(sys.argv[4])
    ready.touch()
    while not go.exists():
        time.sleep(0.005)
    print(pull_image(sys.argv[1], home=sys.argv[2]).digest)
""")


def _pull_in_processes(refs: list[str], home: Path, tmp_path: Path) -> list[str]:
    """Run one ``pull_image`` per ref in its own process, all released at the same instant; their digests."""
    go = tmp_path / "go"
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT, ref, str(home), str(tmp_path / f"ready{n}"),
                               str(go)], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(root)})
             for n, ref in enumerate(refs)]
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"ready{n}").exists() for n in range(len(refs))):
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(refs), outputs
    return [out.decode().strip() for out, _ in outputs]


def _settled_blob_gets(registry, repo: str, expected: set[str]):
    deadline = time.monotonic() + 10  # the registry logs a request just after answering it
    while set(registry.blob_gets(repo)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # let any late line of a duplicate fetch land too
    return registry.blob_gets(repo)


def test_two_processes_pulling_one_image_at_once_fetch_each_blob_once(registry, home, tmp_path):
    big = layer([Entry("big.bin", data=os.urandom(3 << 20))], "gzip")
    small = layer([Entry("small", data=b"s")], "zstd")
    img = image([big, small])
    push_image(registry.url, "msb/concurrent", "v1", img)
    ref = f"{registry.host}/msb/concurrent:v1"
    assert set(_pull_in_processes([ref, ref], home, tmp_path)) == {img.manifest.digest}
    expected = {img.config.digest: 1, big.digest: 1, small.digest: 1}
    assert _settled_blob_gets(registry, "msb/concurrent", set(expected)) == expected
    cache = home / "images"  # built once: one store entry, no leftover build
    assert [p.name for p in (cache / "store").iterdir()] == [img.manifest.digest.split(":")[1]]
    assert list((cache / "tmp").iterdir()) == []


def test_two_images_sharing_a_layer_pulled_at_once_fetch_it_once(registry, home, tmp_path):
    shared = layer([Entry("shared.bin", data=os.urandom(3 << 20))], "gzip")
    first = image([shared, layer([Entry("one", data=b"1")])])
    second = image([shared, layer([Entry("two", data=b"2")], "zstd")])
    push_image(registry.url, "msb/sharing", "one", first)
    push_image(registry.url, "msb/sharing", "two", second)
    digests = _pull_in_processes([f"{registry.host}/msb/sharing:one", f"{registry.host}/msb/sharing:two"],
                                 home, tmp_path)
    assert digests == [first.manifest.digest, second.manifest.digest]
    gets = _settled_blob_gets(registry, "msb/sharing", {shared.digest, first.config.digest, second.config.digest,
                                                        first.layers[1].digest, second.layers[1].digest})
    assert gets[shared.digest] == 1 and set(gets.values()) == {1}
