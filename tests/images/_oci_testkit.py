"""Test helpers: run Debian's ``docker-registry`` on loopback, build image layers, manifests and indexes in memory,
push them to it over the distribution API, write them as OCI layouts and ``docker save`` archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

REGISTRY_BIN = shutil.which("docker-registry")
_CONFIG = """version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""
_ACCESS = re.compile(r'"(GET|HEAD) (/v2/[^ ]+) HTTP/[0-9.]+" (\d{3}) ')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningRegistry:
    host: str  # 127.0.0.1:PORT
    data: Path
    log: Path
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def blob_gets(self, repo: str) -> Counter:
        """How many times each blob of ``repo`` was served (status 200), from the registry's access log."""
        counts: Counter = Counter()
        for method, path, status in _ACCESS.findall(self.log.read_text(errors="replace")):
            match = re.fullmatch(rf"/v2/{re.escape(repo)}/blobs/(sha256:[0-9a-f]{{64}})", path)
            if method == "GET" and status == "200" and match:
                counts[match.group(1)] += 1
        return counts

    def blob_file(self, digest: str) -> Path:
        hexd = digest.split(":")[1]
        return self.data / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def start_registry(base: Path) -> RunningRegistry:
    data = base / "data"
    data.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        port = _free_port()
        config = base / "config.yml"
        config.write_text(_CONFIG.format(data=data, port=port))
        log = base / f"registry-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as resp:
                    if resp.status == 200:
                        return RunningRegistry(f"127.0.0.1:{port}", data, log, proc)
            except OSError:
                time.sleep(0.05)
        stop_registry(proc)
    raise RuntimeError(f"docker-registry did not start; see {log}")


def stop_registry(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {None: "application/vnd.oci.image.layer.v1.tar",
               "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: object) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


@dataclass(frozen=True)
class Entry:
    """One tar member: kind is file|dir|symlink|hardlink|chr|fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    target: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] = field(default_factory=dict)


def tar_bytes(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, 1_700_000_000
            info.pax_headers = dict(e.pax)
            payload = None
            if e.kind == "file":
                info.size = len(e.data)
                payload = io.BytesIO(e.data)
            elif e.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif e.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, e.target
            elif e.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, e.target
            elif e.kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, e.devmajor, e.devminor
            elif e.kind == "fifo":
                info.type = tarfile.FIFOTYPE
            else:
                raise ValueError(e.kind)
            tar.addfile(info, payload)
    return buf.getvalue()


def layer(entries: list[Entry], compression: str | None = "gzip") -> Blob:
    raw = tar_bytes(entries)
    if compression == "gzip":
        raw = gzip.compress(raw, mtime=0)
    elif compression == "zstd":
        raw = zstandard.ZstdCompressor().compress(raw)
    return Blob(raw, LAYER_TYPES[compression])


@dataclass(frozen=True)
class Image:
    config: Blob
    layers: tuple[Blob, ...]
    manifest: Blob


def diff_id(blob: Blob) -> str:
    """The digest of a layer's uncompressed tar, as image configs list them."""
    raw = blob.data
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    elif raw[:4] == b"\x28\xb5\x2f\xfd":
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def image(layers: list[Blob], *, arch: str = "amd64", env: list[str] | None = None, cmd: list[str] | None = None,
          entrypoint: list[str] | None = None, workdir: str = "", user: str = "",
          diff_ids: list[str] | None = None) -> Image:
    config_doc = {"architecture": arch, "os": "linux",
                  "config": {"Env": env or ["PATH=/usr/bin:/bin"], "Cmd": cmd, "Entrypoint": entrypoint,
                             "WorkingDir": workdir, "User": user},
                  "rootfs": {"type": "layers", "diff_ids": [diff_id(b) for b in layers] if diff_ids is None
                             else diff_ids}}
    config = Blob(json.dumps(config_doc).encode(), OCI_CONFIG)
    manifest_doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
                    "layers": [b.descriptor() for b in layers]}
    return Image(config, tuple(layers), Blob(json.dumps(manifest_doc).encode(), OCI_MANIFEST))


def index(images: dict[str, Image]) -> Blob:
    """An OCI index over ``{"linux/amd64": image, "linux/arm64/v8": image}``."""
    manifests = []
    for plat, img in images.items():
        os_, arch, *variant = plat.split("/")
        platform = {"os": os_, "architecture": arch, **({"variant": variant[0]} if variant else {})}
        manifests.append(img.manifest.descriptor(platform=platform))
    return Blob(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode(), OCI_INDEX)


# -- pushing to a registry --------------------------------------------------------------------------------
def push_blob(base_url: str, repo: str, blob: Blob) -> None:
    start = urllib.request.Request(f"{base_url}/v2/{repo}/blobs/uploads/", method="POST", data=b"")
    with urllib.request.urlopen(start, timeout=30) as resp:
        location = resp.headers["Location"]
    if location.startswith("/"):
        location = base_url + location
    sep = "&" if "?" in location else "?"
    put = urllib.request.Request(f"{location}{sep}digest={blob.digest}", method="PUT", data=blob.data,
                                 headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(put, timeout=30) as resp:
        assert resp.status == 201, resp.status


def push_manifest(base_url: str, repo: str, reference: str, blob: Blob) -> None:
    req = urllib.request.Request(f"{base_url}/v2/{repo}/manifests/{reference}", method="PUT", data=blob.data,
                                 headers={"Content-Type": blob.media_type})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 201, resp.status


def push_image(base_url: str, repo: str, tag: str | None, img: Image) -> None:
    for blob in (img.config, *img.layers):
        push_blob(base_url, repo, blob)
    push_manifest(base_url, repo, tag or img.manifest.digest, img.manifest)


def push_index(base_url: str, repo: str, tag: str, images: dict[str, Image]) -> Blob:
    for img in images.values():
        push_image(base_url, repo, None, img)
    idx = index(images)
    push_manifest(base_url, repo, tag, idx)
    return idx


# -- local formats ----------------------------------------------------------------------------------------
def write_oci_layout(directory: Path, tagged: dict[str, Image | tuple[Blob, dict[str, Image]]]) -> Path:
    """An OCI image layout; a value is an Image or (index blob, its images)."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def put(blob: Blob) -> None:
        (blobs / blob.digest.split(":")[1]).write_bytes(blob.data)

    entries = []
    for tag, value in tagged.items():
        if isinstance(value, Image):
            for blob in (value.config, *value.layers, value.manifest):
                put(blob)
            top = value.manifest
        else:
            top, images = value
            for img in images.values():
                for blob in (img.config, *img.layers, img.manifest):
                    put(blob)
            put(top)
        entries.append(top.descriptor(annotations={"org.opencontainers.image.ref.name": tag}))
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    return directory


def write_docker_archive(path: Path, img: Image, repo_tag: str = "test/app:latest") -> Path:
    """A ``docker save`` (v1.2 format) archive: layers as ``<id>/layer.tar``, uncompressed."""
    members: dict[str, bytes] = {}
    layer_names = []
    for n, blob in enumerate(img.layers):
        raw = blob.data
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        elif raw[:4] == b"\x28\xb5\x2f\xfd":
            raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        name = f"{n:02d}{hashlib.sha256(raw).hexdigest()[:20]}/layer.tar"
        members[name] = raw
        layer_names.append(name)
    config_name = img.config.digest.split(":")[1] + ".json"
    members[config_name] = img.config.data
    members["manifest.json"] = json.dumps([{"Config": config_name, "RepoTags": [repo_tag],
                                            "Layers": layer_names}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
