"""Image pull and root-disk build timings (run by hand: ``python3 bench/images.py [runs]``).

A small image made from this host's files (``/usr/lib/python3`` as a gzip layer, ``/usr/share/perl`` as a zstd
layer) is pushed to Debian's ``docker-registry`` on loopback, then pulled into a fresh cache ``runs`` times. Prints
medians per phase, and ext4 (``mke2fs -d`` + debugfs metadata) against EROFS (``mkfs.erofs``) on the same root.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "images")]

from _oci_testkit import LAYER_TYPES, Blob, image, push_image, start_registry, stop_registry  # noqa: E402

from pytest_microsandbox.images import ProgressEvent, pull_image  # noqa: E402
from pytest_microsandbox.images._meta import RootMeta  # noqa: E402
from pytest_microsandbox.images._rootdisk import build_erofs, build_ext4  # noqa: E402

SOURCES = [("/usr/lib/python3", "usr/lib/python3", "gzip"), ("/usr/share/perl", "usr/share/perl", "zstd")]


def make_layer(src: str, arcname: str, compression: str) -> Blob:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(src, arcname=arcname)
    raw = buf.getvalue()
    if compression == "gzip":
        import gzip

        raw = gzip.compress(raw, compresslevel=6, mtime=0)
    else:
        import zstandard

        raw = zstandard.ZstdCompressor(level=3).compress(raw)
    return Blob(raw, LAYER_TYPES[compression])


def main(runs: int) -> None:
    # MSB_BENCH_DIR=/dev/shm separates our code's cost from the disk's (file creation dominates unpacking).
    with tempfile.TemporaryDirectory(prefix="msb-bench-", dir=os.environ.get("MSB_BENCH_DIR")) as scratch_dir:
        scratch = Path(scratch_dir)
        layers = [make_layer(*s) for s in SOURCES]
        img = image(layers)
        registry = start_registry(scratch / "registry")
        try:
            push_image(registry.url, "bench/small", "v1", img)
            phases: dict[str, list[float]] = {"download": [], "unpack": [], "build ext4": [], "total": []}
            last_disk = None
            for n in range(runs):
                marks: dict[str, float] = {}  # phase -> time of its last event

                def on_progress(event: ProgressEvent, marks: dict[str, float] = marks) -> None:
                    marks[event.phase] = time.perf_counter()

                start = time.perf_counter()
                pulled = pull_image(f"{registry.host}/bench/small:v1", home=scratch / f"home{n}",
                                    progress=on_progress)
                end = time.perf_counter()
                phases["download"].append(marks["download"] - start)  # resolve, fetch and verify blobs
                phases["unpack"].append(marks["build"] - marks["download"])
                phases["build ext4"].append(marks["done"] - marks["build"])
                phases["total"].append(end - start)
                last_disk = pulled
            assert last_disk is not None
            rootfs = last_disk.rootfs
            meta = RootMeta.load(rootfs.parent / "rootfs.meta.json")
            ext4, erofs = [], []
            for n in range(runs):
                t = time.perf_counter()
                build_ext4(rootfs, scratch / f"b{n}.ext4", meta)
                ext4.append(time.perf_counter() - t)
                t = time.perf_counter()
                build_erofs(rootfs, scratch / f"b{n}.erofs")
                erofs.append(time.perf_counter() - t)
            size = sum(len(b.data) for b in layers)
            print(f"scratch: {scratch}")
            print(f"image: {len(meta.entries)} entries, {size / 2**20:.1f} MiB compressed, "
                  f"ext4 {(scratch / 'b0.ext4').stat().st_blocks * 512 / 2**20:.1f} MiB allocated, "
                  f"erofs {(scratch / 'b0.erofs').stat().st_size / 2**20:.1f} MiB; {runs} runs, medians")
            print(f"{'phase':<22}{'median s':>10}")
            for name, values in phases.items():
                print(f"{'pull: ' + name:<22}{statistics.median(values):>10.3f}")
            m4, me = statistics.median(ext4), statistics.median(erofs)
            print(f"{'build ext4 alone':<22}{m4:>10.3f}")
            print(f"{'build erofs alone':<22}{me:>10.3f}")
            print(f"{'ext4 / erofs':<22}{m4 / me:>10.2f}")
        finally:
            stop_registry(registry.process)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
