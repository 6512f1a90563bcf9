"""A small OCI distribution client on urllib: manifests and blobs, token auth, retries, digest checks.

Why not ``oras`` or ``python-dxf``: neither resolves a manifest list for a platform the way we need (oras not at
all; dxf by exact ``os/arch/variant`` string only), neither verifies a manifest fetched by digest against that
digest, and neither retries; both pull in ``requests`` (dxf also tqdm and www-authenticate). What we need is ~200
lines on the standard library.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from pytest_microsandbox.errors import ImageError
from pytest_microsandbox.images._auth import Challenge, Credentials, load_credentials, parse_challenge
from pytest_microsandbox.images._digest import CHUNK, check_bytes, sha256_bytes, write_verified
from pytest_microsandbox.images._limits import MAX_DOCUMENT_BYTES
from pytest_microsandbox.images._manifest import ACCEPT, media_type_of

_MANIFEST_LIMIT = MAX_DOCUMENT_BYTES
_USER_AGENT = "pytest-microsandbox"


class _Transient(Exception):
    """A failure worth retrying (connection trouble, 429, 5xx, a stream cut short)."""


def insecure_from_env() -> tuple[str, ...]:
    """Registries named in ``MSB_INSECURE_REGISTRIES`` (comma separated) may be reached over plain http."""
    raw = os.environ.get("MSB_INSECURE_REGISTRIES", "")
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.find("]")]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class RegistryClient:
    """Talks to one registry host. ``http`` is used only for loopback hosts and those in ``insecure``."""

    def __init__(self, registry: str, api_host: str, *, insecure: Iterable[str] = (),
                 credentials: Credentials | None = None, timeout: float = 60.0, attempts: int = 4) -> None:
        self.registry = registry
        allowed = set(insecure)
        plain = is_loopback(api_host) or api_host in allowed or registry in allowed
        self.base = f"{'http' if plain else 'https'}://{api_host}/v2/"
        self.credentials = credentials if credentials is not None else load_credentials(registry)
        self.timeout = timeout
        self.attempts = attempts
        self._tokens: dict[str, str] = {}
        self._basic = False

    # -- public -------------------------------------------------------------------------------------------
    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """Fetch a manifest or index: (raw bytes, media type, digest). A digest reference is verified."""
        url = self.base + f"{repository}/manifests/{urllib.parse.quote(reference, safe=':')}"

        def fetch() -> tuple[bytes, str | None]:
            with self._open(url, repository, {"Accept": ACCEPT}) as resp:
                raw = _read_small(resp, _MANIFEST_LIMIT + 1)
                if len(raw) > _MANIFEST_LIMIT:
                    raise ImageError(f"{repository}:{reference}: manifest larger than {_MANIFEST_LIMIT} bytes")
                return raw, resp.headers.get("Content-Type")

        raw, header_type = self._retrying(fetch)
        if reference.startswith("sha256:"):
            check_bytes(raw, reference, "manifest")
            digest = reference
        else:
            digest = sha256_bytes(raw)
        media_type = media_type_of(raw, (header_type or "").split(";")[0].strip() or None)
        return raw, media_type, digest

    def fetch_blob(self, repository: str, digest: str, dest: Path, size: int | None = None,
                   on_bytes: Callable[[int], None] | None = None) -> Path:
        """Stream a blob into ``dest`` (atomically), verifying its sha256 as it arrives."""
        url = self.base + f"{repository}/blobs/{digest}"

        def fetch() -> Path:
            with self._open(url, repository, {}) as resp:
                return write_verified(dest, _chunks(resp), digest, size, on_bytes)

        return self._retrying(fetch)

    # -- plumbing -----------------------------------------------------------------------------------------
    def _retrying(self, func: Callable[[], object]):  # type: ignore[no-untyped-def]
        wrapped = retry(retry=retry_if_exception_type(_Transient), stop=stop_after_attempt(self.attempts),
                        wait=wait_exponential(multiplier=0.2, max=3), reraise=True)(func)
        try:
            return wrapped()
        except _Transient as err:
            raise ImageError(f"{self.registry}: {err} (after {self.attempts} attempts)") from None

    def _request(self, url: str, headers: dict[str, str], scope_key: str) -> urllib.request.Request:
        req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, **headers})
        # Unredirected: the token must not follow a redirect to a blob CDN.
        if scope_key in self._tokens:
            req.add_unredirected_header("Authorization", f"Bearer {self._tokens[scope_key]}")
        elif self._basic and self.credentials:
            req.add_unredirected_header("Authorization", self.credentials.basic_header())
        return req

    def _open(self, url: str, repository: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        scope_key = f"repository:{repository}:pull"
        for attempt in range(2):
            try:
                return urllib.request.urlopen(self._request(url, headers, scope_key), timeout=self.timeout)
            except urllib.error.HTTPError as err:
                challenge = err.headers.get("WWW-Authenticate", "") if err.code == 401 else ""
                body = _error_text(err)
                err.close()
                if err.code == 401 and attempt == 0 and challenge:
                    self._authenticate(parse_challenge(challenge), scope_key)
                    continue
                if err.code == 429 or err.code >= 500:
                    raise _Transient(f"HTTP {err.code} for {url}") from None
                if err.code in (401, 403):
                    raise ImageError(f"{self.registry}: access denied to {repository} ({err.code}{body})") from None
                if err.code == 404:
                    raise ImageError(f"{self.registry}: not found: {url.split('/v2/', 1)[1]}{body}") from None
                raise ImageError(f"{self.registry}: HTTP {err.code} for {url}{body}") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                raise _Transient(f"cannot reach {url}: {getattr(err, 'reason', err)}") from None
        raise ImageError(f"{self.registry}: authentication failed for {repository}")

    def _authenticate(self, challenge: Challenge | None, scope_key: str) -> None:
        if challenge is None:
            raise ImageError(f"{self.registry}: unparseable authentication challenge")
        if challenge.scheme == "basic":
            if not self.credentials:
                raise ImageError(f"{self.registry}: needs credentials (none in the Docker config)")
            self._basic = True
            return
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise ImageError(f"{self.registry}: unsupported authentication scheme {challenge.scheme!r}")
        realm = challenge.params["realm"]
        parts = urllib.parse.urlsplit(realm)
        plain_ok = parts.scheme == "http" and (is_loopback(parts.netloc) or self.base.startswith("http://"))
        if parts.scheme != "https" and not plain_ok:
            raise ImageError(f"{self.registry}: refusing token realm {realm!r}")
        query = {"scope": challenge.params.get("scope", scope_key)}
        if "service" in challenge.params:
            query["service"] = challenge.params["service"]
        req = urllib.request.Request(realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query),
                                     headers={"User-Agent": _USER_AGENT})
        if self.credentials:
            req.add_unredirected_header("Authorization", self.credentials.basic_header())

        def fetch() -> bytes:
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return resp.read(1 << 20)
            except urllib.error.HTTPError as err:
                err.close()
                if err.code == 429 or err.code >= 500:
                    raise _Transient(f"token endpoint HTTP {err.code}") from None
                raise ImageError(f"{self.registry}: token request refused (HTTP {err.code})") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                raise _Transient(f"cannot reach token endpoint {realm}: {err}") from None

        try:
            doc = json.loads(self._retrying(fetch))
        except ValueError:
            raise ImageError(f"{self.registry}: token endpoint returned invalid JSON") from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise ImageError(f"{self.registry}: token endpoint returned no token")
        self._tokens[scope_key] = token


def _read_small(resp: http.client.HTTPResponse, limit: int) -> bytes:
    try:
        raw = resp.read(limit)
    except (OSError, http.client.HTTPException) as err:
        raise _Transient(f"response interrupted: {err}") from None
    if resp.length and len(raw) < limit:
        raise _Transient(f"response cut short ({resp.length} bytes missing)")
    return raw


def _chunks(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    try:
        while chunk := resp.read(CHUNK):
            yield chunk
        # read(amt) returns b"" at EOF even when Content-Length promised more: check what is missing.
        if resp.length:
            raise _Transient(f"blob stream cut short ({resp.length} bytes missing)")
    except (TimeoutError, OSError, http.client.HTTPException) as err:
        raise _Transient(f"blob stream interrupted: {err}") from None


def _error_text(err: urllib.error.HTTPError) -> str:
    try:
        doc = json.loads(err.read(64 << 10))
        messages = [e.get("message", "") for e in doc.get("errors", []) if isinstance(e, dict)]
        return f": {'; '.join(m for m in messages if m)}" if any(messages) else ""
    except (ValueError, OSError, AttributeError):
        return ""
