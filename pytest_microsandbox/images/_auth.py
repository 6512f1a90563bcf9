"""Registry credentials (``~/.docker/config.json``, credential helpers) and ``WWW-Authenticate`` challenges."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pytest_microsandbox.images._reference import DOCKER_HUB

_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)')


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercased: "bearer" or "basic"
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """Parse one ``WWW-Authenticate`` value (``Bearer realm="...",service="...",scope="..."``)."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if not match:
            break
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params[match.group(1).lower()] = value
        pos = match.end()
    return Challenge(scheme.lower(), params)


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return (Path(base) if base else Path.home() / ".docker") / "config.json"


def _config_keys(registry: str) -> list[str]:
    keys = [registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/", f"https://{registry}/v2/"]
    if registry == DOCKER_HUB:
        keys = ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"] + keys
    return keys


def load_credentials(registry: str, config_path: Path | None = None) -> Credentials | None:
    """Credentials for ``registry`` from the Docker config (inline ``auth``/``username``+``password``, or a
    ``credHelpers``/``credsStore`` helper when its binary is installed); None when there are none."""
    path = config_path or docker_config_path()
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    auths: dict[str, object] = doc["auths"] if isinstance(doc.get("auths"), dict) else {}
    for key in _config_keys(registry):
        entry = auths.get(key)
        if isinstance(entry, dict):
            creds = _inline(entry)
            if creds:
                return creds
    helpers: dict[str, object] = doc["credHelpers"] if isinstance(doc.get("credHelpers"), dict) else {}
    named = [helpers.get(k) for k in _config_keys(registry)] + [doc.get("credsStore")]
    helper = next((h for h in named if isinstance(h, str) and h), None)
    if helper:
        return _from_helper(helper, registry)
    return None


def _inline(entry: dict[str, object]) -> Credentials | None:
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, password = base64.b64decode(auth).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return Credentials(user, password) if sep else None
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str) and name:
        return Credentials(name, secret)
    return None


def _from_helper(helper: str, registry: str) -> Credentials | None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", helper):
        return None
    binary = shutil.which(f"docker-credential-{helper}")
    if not binary:
        return None
    server = "https://index.docker.io/v1/" if registry == DOCKER_HUB else registry
    try:
        out = subprocess.run([binary, "get"], input=server.encode(), capture_output=True, timeout=20, check=True)
        doc = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    user, secret = doc.get("Username"), doc.get("Secret")
    if isinstance(user, str) and isinstance(secret, str) and secret:
        return Credentials(user, secret)
    return None
