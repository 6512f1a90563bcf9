"""Fixtures for the image tests: Debian's ``docker-registry`` on 127.0.0.1 (own config, storage and log; no
systemd), and a token-auth proxy of ours in front of it that also counts requests."""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _oci_testkit import REGISTRY_BIN, RunningRegistry, start_registry, stop_registry


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory):
    if REGISTRY_BIN is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry; see .ci/apt.d/registry.txt)")
    running = start_registry(tmp_path_factory.mktemp("registry"))
    yield running
    stop_registry(running.process)


# -- a token-auth proxy -----------------------------------------------------------------------------------
@dataclass
class AuthProxy:
    host: str
    username: str
    password: str
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, authorization header kind)
    tokens_issued: int = 0
    fail_next: int = 0  # answer this many authorised requests with 503
    truncate_next: int = 0  # cut this many authorised blob responses off halfway


def _make_handler(proxy: AuthProxy, upstream: str):
    expected = "Basic " + base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            auth = self.headers.get("Authorization", "")
            proxy.requests.append((self.path, auth.split(" ")[0]))
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/token":
                if auth != expected:
                    self._reply(401, b'{"details":"bad credentials"}', {"Content-Type": "application/json"})
                    return
                scope = urllib.parse.parse_qs(url.query).get("scope", [""])[0]
                proxy.tokens_issued += 1
                token = base64.urlsafe_b64encode(scope.encode()).decode()
                self._reply(200, json.dumps({"token": token, "expires_in": 300}).encode(),
                            {"Content-Type": "application/json"})
                return
            repo = re.match(r"/v2/(.+)/(?:manifests|blobs)/", url.path)
            scope = f"repository:{repo.group(1)}:pull" if repo else "registry:catalog:*"
            if auth != "Bearer " + base64.urlsafe_b64encode(scope.encode()).decode():
                challenge = (f'Bearer realm="http://{proxy.host}/token",service="msb-test",scope="{scope}"')
                self._reply(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                            {"WWW-Authenticate": challenge, "Content-Type": "application/json"})
                return
            if proxy.fail_next > 0:
                proxy.fail_next -= 1
                self._reply(503, b"try later", {"Content-Type": "text/plain"})
                return
            conn = http.client.HTTPConnection(upstream, timeout=30)
            try:
                conn.request("GET", self.path, headers={"Accept": self.headers.get("Accept", "*/*")})
                resp = conn.getresponse()
                body = resp.read()
                headers = {k: v for k, v in resp.getheaders()
                           if k.lower() in ("content-type", "docker-content-digest")}
                if proxy.truncate_next > 0 and "/blobs/" in self.path and resp.status == 200:
                    proxy.truncate_next -= 1
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self._reply(resp.status, body, headers)
            finally:
                conn.close()

    return Handler


@pytest.fixture(scope="session")
def auth_registry(registry: RunningRegistry):
    """The registry behind bearer-token auth: ``/token`` wants Basic user:secret and returns a scoped token."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    proxy = AuthProxy(f"127.0.0.1:{server.server_address[1]}", "tester", "s3cret")
    server.RequestHandlerClass = _make_handler(proxy, registry.host)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield proxy
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(autouse=True)
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every image test gets its own empty DOCKER_CONFIG (never the user's); tests write config.json as needed."""
    directory = tmp_path / "docker-config"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory / "config.json"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "msb-home"
