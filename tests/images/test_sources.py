"""OCI layouts, ``docker save`` archives and rootfs directories, made by our helper, into cached root disks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from _oci_testkit import Entry, image, index, layer, write_docker_archive, write_oci_layout

from pytest_microsandbox.errors import ImageError
from pytest_microsandbox.images import Platform, pull_image


def _cat(disk: Path, path: str) -> bytes:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(disk)], capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def images():
    amd = image([layer([Entry("etc/hostname", data=b"amd\n"), Entry("usr/bin/app", data=b"A", mode=0o755)]),
                 layer([Entry("etc/extra", data=b"zstd layer\n", uid=33, gid=33)], "zstd")],
                cmd=["/usr/bin/app"], env=["A=1"], workdir="/srv")
    arm = image([layer([Entry("etc/hostname", data=b"arm\n")])], arch="arm64")
    return amd, arm


def test_oci_layout_by_tag_and_through_index(tmp_path, home, images):
    amd, arm = images
    idx = index({"linux/amd64": amd, "linux/arm64/v8": arm})
    layout = write_oci_layout(tmp_path / "layout", {"single": amd, "multi": (idx, {"a": amd, "b": arm})})
    img = pull_image(f"oci:{layout}:single", home=home)
    assert img.digest == amd.manifest.digest
    assert _cat(img.disk, "/etc/extra") == b"zstd layer\n"
    assert img.config.cmd == ("/usr/bin/app",) and img.config.working_dir == "/srv"
    arm_img = pull_image(f"oci:{layout}:multi", home=home, platform=Platform("linux", "arm64", "v8"))
    assert _cat(arm_img.disk, "/etc/hostname") == b"arm\n"
    with pytest.raises(ImageError, match="no manifest tagged 'nope'"):
        pull_image(f"oci:{layout}:nope", home=home)
    with pytest.raises(ImageError, match="name one with oci:DIR:TAG"):
        pull_image(f"oci:{layout}", home=home)
    with pytest.raises(ImageError, match="not an OCI layout"):
        pull_image(f"oci:{tmp_path}/missing", home=home)


def test_oci_layout_with_corrupt_blob_leaves_nothing(tmp_path, home, images):
    amd, _ = images
    layout = write_oci_layout(tmp_path / "layout", {"latest": amd})
    victim = layout / "blobs" / "sha256" / amd.layers[1].digest.split(":")[1]
    victim.write_bytes(victim.read_bytes()[:-3] + b"zzz")
    with pytest.raises(ImageError, match=amd.layers[1].digest):
        pull_image(f"oci:{layout}", home=home)
    cache = home / "images"
    assert not (cache / "blobs" / "sha256" / amd.layers[1].digest.split(":")[1]).exists()
    assert list((cache / "store").iterdir()) == [] and list((cache / "tmp").iterdir()) == []


def test_docker_archive(tmp_path, home, images):
    amd, _ = images
    archive = write_docker_archive(tmp_path / "img.tar", amd)
    img = pull_image(f"docker-archive:{archive}", home=home)
    assert _cat(img.disk, "/etc/hostname") == b"amd\n"
    assert img.config.env == {"A": "1"}
    again = pull_image(f"docker-archive:{archive}", home=home)
    assert again.digest == img.digest and again.disk == img.disk
    with pytest.raises(ImageError, match="cannot open archive"):
        pull_image(f"docker-archive:{tmp_path}/absent.tar", home=home)


def test_docker_archive_missing_layer(tmp_path, home):
    import io
    import json
    import tarfile

    path = tmp_path / "broken.tar"
    with tarfile.open(path, "w") as tar:
        data = json.dumps([{"Config": "c.json", "Layers": ["gone/layer.tar"]}]).encode()
        for name, payload in (("manifest.json", data), ("c.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(ImageError, match="gone/layer.tar"):
        pull_image(f"docker-archive:{path}", home=home)


def test_rootfs_directory(tmp_path, home):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "motd").write_text("hi\n")
    os.symlink("/etc/motd", root / "link")
    img = pull_image(f"dir:{root}", home=home)
    assert _cat(img.disk, "/etc/motd") == b"hi\n"
    assert img.rootfs == root
    assert pull_image(f"dir:{root}", home=home).digest == img.digest  # unchanged: same key, same disk
    (root / "etc" / "motd").write_text("changed\n")
    changed = pull_image(f"dir:{root}", home=home)
    assert changed.digest != img.digest and _cat(changed.disk, "/etc/motd") == b"changed\n"
    with pytest.raises(ImageError, match="not a directory"):
        pull_image(f"dir:{tmp_path}/none", home=home)


def test_host_is_recognised_but_not_pulled(home):
    with pytest.raises(ImageError, match="sandbox resolves it"):
        pull_image("host", home=home)


def test_cached_blob_gone_bad_is_detected_removed_and_refetched(tmp_path, home, images):
    from pytest_microsandbox.images import ImageCache

    amd, _ = images
    layout = write_oci_layout(tmp_path / "layout", {"latest": amd})
    first = pull_image(f"oci:{layout}", home=home)
    cache = ImageCache(home)
    cache.remove(first.digest)
    cached = cache.blob_path(amd.layers[0].digest)
    cached.chmod(0o644)
    cached.write_bytes(cached.read_bytes()[:-8] + b"\0" * 8)  # bit rot in the gzip trailer
    with pytest.raises(ImageError, match=f"cached blob {amd.layers[0].digest} is corrupt"):
        pull_image(f"oci:{layout}", home=home)
    assert not cached.exists() and cache.get(first.digest) is None
    again = pull_image(f"oci:{layout}", home=home)
    assert again.digest == first.digest and cached.exists()


def test_empty_image_builds_a_disk(tmp_path, home):
    layout = write_oci_layout(tmp_path / "layout", {"latest": image([])})
    img = pull_image(f"oci:{layout}", home=home)
    assert img.disk.stat().st_size > 0 and img.layers == ()


def test_policy_missing_reuses_only_an_image_of_the_wanted_platform(tmp_path, home, images):
    amd, arm = images
    idx = index({"linux/amd64": amd, "linux/arm64/v8": arm})
    layout = write_oci_layout(tmp_path / "layout", {"multi": (idx, {"a": amd, "b": arm})})
    ref = f"oci:{layout}:multi"
    arm_img = pull_image(ref, home=home, platform=Platform("linux", "arm64", "v8"))
    assert pull_image(ref, home=home, platform=Platform("linux", "arm64"), policy="missing").digest == arm_img.digest
    amd_img = pull_image(ref, home=home, platform=Platform("linux", "amd64"), policy="missing")
    assert amd_img.digest == amd.manifest.digest


def test_layer_not_matching_its_diff_id_is_refused(tmp_path, home):
    good = layer([Entry("a", data=b"a")])
    liar = image([good], diff_ids=["sha256:" + "0" * 64])
    layout = write_oci_layout(tmp_path / "layout", {"latest": liar})
    with pytest.raises(ImageError, match=f"layer {good.digest}: uncompressed content hashes to .* not its diff_id"):
        pull_image(f"oci:{layout}", home=home)
    assert list((home / "images" / "store").iterdir()) == []
