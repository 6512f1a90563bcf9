"""OCI layouts and docker archives from anyone: every file of theirs is type-checked before it is opened for reading
(a FIFO would block the pull forever), stays inside the layout, and is read up to a bound."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from _oci_testkit import Entry, image, layer, write_docker_archive, write_oci_layout

from pytest_microsandbox.errors import ImageError
from pytest_microsandbox.images import pull_image

# The old code blocked forever opening a FIFO for reading: fail instead of hanging the run.
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    return write_oci_layout(tmp_path / "layout", {"latest": image([layer([Entry("etc/hostname", data=b"h\n")])])})


def test_fifo_named_index_json_is_refused_without_blocking(layout, home):
    (layout / "index.json").unlink()
    os.mkfifo(layout / "index.json")
    with pytest.raises(ImageError, match="index.json is a FIFO, not a regular file"):
        pull_image(f"oci:{layout}", home=home)


def test_fifo_in_place_of_a_manifest_or_layer_blob_is_refused(tmp_path, home):
    img = image([layer([Entry("f", data=b"f")])])
    for blob in (img.manifest, img.layers[0]):
        layout = write_oci_layout(tmp_path / blob.digest[7:19], {"latest": img})
        path = layout / "blobs" / "sha256" / blob.digest.split(":")[1]
        path.unlink()
        os.mkfifo(path)
        with pytest.raises(ImageError, match="is a FIFO, not a regular file"):
            pull_image(f"oci:{layout}", home=home)
    assert list((home / "images" / "tmp").iterdir()) == []


def test_symlink_out_of_the_layout_is_refused_and_one_inside_is_followed(layout, tmp_path, home):
    index = layout / "index.json"
    inside = layout / "index-copy.json"
    index.rename(inside)
    index.symlink_to("index-copy.json")
    assert pull_image(f"oci:{layout}", home=home).disk.exists()
    outside = tmp_path / "outside.json"
    outside.write_bytes(inside.read_bytes())
    index.unlink()
    index.symlink_to(outside)
    with pytest.raises(ImageError, match="index.json is a symlink leading out of the layout"):
        pull_image(f"oci:{layout}", home=home)


def test_oversized_index_json_is_not_read_whole(layout, home):
    with open(layout / "index.json", "r+b") as f:
        f.truncate(64 << 20)  # sparse: costs nothing to write, and would cost 64 MiB to read
    with pytest.raises(ImageError, match="index.json is larger than 8388608 bytes"):
        pull_image(f"oci:{layout}", home=home)


def test_docker_archive_that_is_a_fifo_is_refused_without_blocking(tmp_path, home):
    archive = tmp_path / "image.tar"
    os.mkfifo(archive)
    with pytest.raises(ImageError, match="cannot open archive: .* is a FIFO, not a regular file"):
        pull_image(f"docker-archive:{archive}", home=home)


def test_docker_archive_with_an_oversized_manifest_is_refused(tmp_path, home):
    path = tmp_path / "huge.tar"
    payload = json.dumps([{"Config": "c.json", "Layers": [], "Padding": " " * (9 << 20)}]).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(ImageError, match="manifest.json is larger than 8388608 bytes"):
        pull_image(f"docker-archive:{path}", home=home)


def test_docker_archive_layers_count_against_max_bytes(tmp_path, home, monkeypatch):
    archive = write_docker_archive(tmp_path / "img.tar", image([layer([Entry("zeros", data=bytes(4 << 20))])]))
    monkeypatch.setenv("MSB_IMAGE_MAX_BYTES", "1M")
    with pytest.raises(ImageError, match="layers: over the image limit max_bytes=1048576"):
        pull_image(f"docker-archive:{archive}", home=home)
    assert [p.name for p in (home / "images" / "blobs" / "sha256").iterdir() if p.name.startswith(".tmp")] == []
