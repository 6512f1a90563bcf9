"""The cache's names, removal and pruning, through ``msb image`` handlers, and pull progress."""

from __future__ import annotations

import argparse
import io

import pytest
from _oci_testkit import Entry, image, layer, write_oci_layout

from pytest_microsandbox.cli import image as image_cli
from pytest_microsandbox.images import ImageCache, ProgressEvent, TerminalProgress, pull_image


def msb(home, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="msb")
    parser.add_argument("--home")
    sub = parser.add_subparsers(dest="command", required=True)
    image_cli.register(sub)
    args = parser.parse_args(["--home", str(home), *argv])
    return args.handler(args)


@pytest.fixture
def layout(tmp_path):
    one = image([layer([Entry("one", data=b"1")])])
    two = image([layer([Entry("two", data=b"2" * 5000)], "zstd")])
    return write_oci_layout(tmp_path / "layout", {"one": one, "two": two}), one, two


def test_pull_ls_rm_prune(home, layout, capsys):
    path, one, two = layout
    assert msb(home, "image", "pull", "-q", f"oci:{path}:one") == 0
    assert capsys.readouterr().out.strip() == one.manifest.digest
    assert msb(home, "image", "pull", f"oci:{path}:two") == 0
    out = capsys.readouterr().out
    assert two.manifest.digest in out and "root.ext4" in out
    assert msb(home, "image", "ls") == 0
    listing = capsys.readouterr().out
    assert f"oci:{path}:one" in listing and one.manifest.digest.split(":")[1][:12] in listing
    cache = ImageCache(home)
    cache.tag("extra-name", one.manifest.digest)
    assert msb(home, "image", "rm", "extra-name") == 0  # other names remain: untag only
    assert cache.get(one.manifest.digest).references == (f"oci:{path}:one",)
    assert msb(home, "image", "rm", one.manifest.digest.split(":")[1][:12]) == 0
    assert msb(home, "image", "rm", "nothing:here") == 1
    capsys.readouterr()
    assert msb(home, "image", "ls", "-q") == 0
    assert capsys.readouterr().out.split() == [two.manifest.digest]
    assert cache.blob_path(one.layers[0].digest).exists()  # blobs stay until prune
    assert msb(home, "image", "prune") == 0
    assert not cache.blob_path(one.layers[0].digest).exists()
    assert cache.blob_path(two.layers[0].digest).exists() and cache.get(two.manifest.digest) is not None
    assert msb(home, "image", "prune", "--all") == 0
    assert cache.list_images() == [] and list(cache.blobs.iterdir()) == []


def test_prune_removes_abandoned_build_but_not_one_in_progress(home, layout):
    path, one, _ = layout
    cache = ImageCache(home)
    abandoned = cache.tmp / ("a" * 64 + "-x")
    abandoned.mkdir()
    (abandoned / "junk").write_bytes(b"j" * 100)
    busy = cache.tmp / ("b" * 64 + "-y")
    busy.mkdir()
    with cache.lock("image-" + "b" * 64):
        cache.prune()
    assert not abandoned.exists() and busy.exists()


def test_unnamed_images_are_pruned(home, layout):
    path, one, _ = layout
    img = pull_image(f"oci:{path}:one", home=home)
    cache = ImageCache(home)
    cache.untag(f"oci:{path}:one")
    assert cache.get(img.digest).references == ()
    assert cache.prune() == (1, len(one.layers[0].data) + len(one.config.data))
    assert cache.get(img.digest) is None


def test_progress_events_and_terminal_bar(home, layout):
    path, _, two = layout
    events: list[ProgressEvent] = []
    pull_image(f"oci:{path}:two", home=home, progress=events.append)
    downloads = [e for e in events if e.phase == "download"]
    assert downloads[-1].done == downloads[-1].total == len(two.layers[0].data)
    assert [e.phase for e in events][-3:] == ["unpack", "build", "done"]
    out = io.StringIO()
    bar = TerminalProgress(out)
    bar(ProgressEvent("download", "sha256:" + "c" * 64, 2048, 4096))
    bar(ProgressEvent("download", "sha256:" + "c" * 64, 4096, 4096))
    assert "cccccccccccc [##############################] 4.0KiB/4.0KiB" in out.getvalue()


def test_platform_flag_is_validated(home, layout):
    from pytest_microsandbox.errors import ImageError

    with pytest.raises(ImageError, match="invalid platform"):
        msb(home, "image", "pull", "--platform", "linux", f"oci:{layout[0]}:one")
