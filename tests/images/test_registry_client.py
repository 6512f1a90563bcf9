"""The distribution client's edges: challenges, credentials, http only where allowed, retries."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest
from _oci_testkit import Entry, image, layer, push_image

import pytest_microsandbox.images as images_pkg
from pytest_microsandbox.errors import ImageError
from pytest_microsandbox.images import pull_image
from pytest_microsandbox.images._auth import Credentials, load_credentials, parse_challenge
from pytest_microsandbox.images._registry import RegistryClient, is_loopback


def test_all_is_sorted_and_complete():
    assert images_pkg.__all__ == sorted(images_pkg.__all__)
    assert all(hasattr(images_pkg, name) for name in images_pkg.__all__)


def test_parse_challenge():
    c = parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                        'scope="repository:library/python:pull"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                        "scope": "repository:library/python:pull"}
    assert parse_challenge('Basic realm="x \\"y\\""').params == {"realm": 'x "y"'}
    assert parse_challenge("Bearer realm=bare,error=insufficient_scope").params["error"] == "insufficient_scope"
    assert parse_challenge("") is None


def test_credentials_from_docker_config(docker_config, tmp_path, monkeypatch):
    hub = base64.b64encode(b"hubuser:hubpass").decode()
    docker_config.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": hub},
        "r.example.com": {"username": "u", "password": "p"},
        "broken.example.com": {"auth": "!!!"},
    }, "credHelpers": {"helped.example.com": "msbtest"}}))
    assert load_credentials("docker.io") == Credentials("hubuser", "hubpass")
    assert load_credentials("r.example.com") == Credentials("u", "p")
    assert load_credentials("broken.example.com") is None
    assert load_credentials("other.example.com") is None
    assert load_credentials("helped.example.com") is None  # helper binary not installed
    helper = tmp_path / "bin" / "docker-credential-msbtest"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\nread server\necho "{\\"Username\\":\\"h-$server\\",\\"Secret\\":\\"tok\\"}"\n')
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    assert load_credentials("helped.example.com") == Credentials("h-helped.example.com", "tok")


def test_plain_http_only_for_loopback_or_listed():
    assert RegistryClient("example.com", "example.com").base == "https://example.com/v2/"
    assert RegistryClient("example.com", "example.com", insecure=["example.com"]).base == "http://example.com/v2/"
    assert RegistryClient("localhost:5000", "localhost:5000").base.startswith("http://")
    assert RegistryClient("[::1]:5000", "[::1]:5000").base.startswith("http://")
    assert [is_loopback(h) for h in ("127.0.0.5:1", "localhost", "10.0.0.1:5000", "example.com")] == [
        True, True, False, False]


def test_insecure_list_from_environment(monkeypatch, home):
    monkeypatch.setenv("MSB_INSECURE_REGISTRIES", "nowhere.invalid:5000, other.invalid")
    from pytest_microsandbox.images._registry import insecure_from_env

    assert insecure_from_env() == ("nowhere.invalid:5000", "other.invalid")


@pytest.fixture
def authed(auth_registry, docker_config):
    docker_config.write_text(json.dumps({"auths": {auth_registry.host: {"username": "tester",
                                                                        "password": "s3cret"}}}))
    return auth_registry


def test_transient_errors_are_retried(registry, authed, home):
    img = image([layer([Entry("retry", data=os.urandom(200_000))], "gzip")])
    push_image(registry.url, "msb/retry", "v1", img)
    authed.fail_next = 2
    authed.truncate_next = 1
    pulled = pull_image(f"{authed.host}/msb/retry:v1", home=home)
    assert pulled.digest == img.manifest.digest
    assert authed.fail_next == 0 and authed.truncate_next == 0


def test_persistent_server_errors_give_up_with_image_error(registry, authed, home):
    img = image([layer([Entry("down", data=b"d")], "gzip")])
    push_image(registry.url, "msb/down", "v1", img)
    authed.fail_next = 100
    try:
        with pytest.raises(ImageError, match=r"HTTP 503 .*after 4 attempts"):
            pull_image(f"{authed.host}/msb/down:v1", home=home)
    finally:
        authed.fail_next = 0
