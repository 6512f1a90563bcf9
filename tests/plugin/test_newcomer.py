"""What a newcomer hit (issue 18): the marker takes every ``sandbox_factory`` option and names the valid ones, and a
malformed ``--msb-image`` is a usage error before any test runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_microsandbox.plugin._options import OPTIONS
from pytest_microsandbox.sandbox._namespace_backend import namespaces_unavailable


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)
    monkeypatch.setenv("MSB_HOME", str(path))
    monkeypatch.delenv("CI", raising=False)
    return path


@pytest.mark.skipif(bool(namespaces_unavailable()), reason=str(namespaces_unavailable()))
def test_marker_takes_env_volumes_and_workdir(pytester: pytest.Pytester, home: Path) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_microsandbox.sync import Volume

        @pytest.mark.sandbox(env={"GREETING": "hi"}, workdir="/tmp",
                             volumes={"/scratch": Volume.tmpfs(size_mib=8)})
        def test_marked(sandbox, sandbox_factory):
            assert sandbox.shell("echo $GREETING; pwd").stdout == "hi\\n/tmp\\n"
            assert sandbox.shell("touch /scratch/f && echo ok").stdout == "ok\\n"
            other = sandbox_factory(env={"GREETING": "bye"})  # the factory's keyword wins over the marker's
            assert other.shell("echo $GREETING").stdout == "bye\\n"
        """
    )
    pytester.runpytest("--strict-markers", "--msb-isolation=namespace").assert_outcomes(passed=1)


def test_marker_options_reach_the_factory_as_copies(pytester: pytest.Pytester, home: Path) -> None:
    """Without booting anything: what the marker gives reaches ``Sandbox.create``, and a hook that changes one
    sandbox's env leaves the next sandbox's alone."""
    pytester.makeconftest(
        """
        import pytest
        from pytest_microsandbox.plugin import _sandbox_fixtures as sandbox_fixtures

        SEEN = []

        class Fake:
            def __init__(self, name):
                self.name = name
            def remove(self):
                pass

        @pytest.fixture(autouse=True)
        def fake_create(monkeypatch):
            def create(**options):
                SEEN.append(options)
                return Fake(options["name"])
            monkeypatch.setattr(sandbox_fixtures.Sandbox, "create", staticmethod(create))
            return SEEN

        def pytest_microsandbox_sandbox_config(config, request, options):
            options["env"]["TOUCHED"] = "1"
        """
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.sandbox(env={"A": "1"}, labels={"team": "x"}, security="restricted", memory_mib=256)
        def test_marked(sandbox_factory, fake_create):
            sandbox_factory()
            sandbox_factory()
            first, second = fake_create
            assert first["env"] == second["env"] == {"A": "1", "TOUCHED": "1"}
            assert first["env"] is not second["env"]
            assert first["security"] == "restricted" and first["memory_mib"] == 256
            assert first["labels"]["team"] == "x"
        """
    )
    pytester.runpytest("--strict-markers").assert_outcomes(passed=1)


def test_run_wide_marker_option_names_its_setting(pytester: pytest.Pytester, home: Path) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.sandbox(home="/tmp/elsewhere")
        def test_x(msb_sandbox_settings):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*'home' applies to the whole run, not one test: set --msb-home*"])


@pytest.mark.parametrize("image,reason", [
    ("Python:3.12", "repository names are lowercase"),
    ("python:bad tag", "invalid tag"),
    ("alpine@sha256:abc", "digest must be sha256"),
    ("oci:", "missing path"),
])
def test_bad_image_is_a_usage_error_naming_the_option(pytester: pytest.Pytester, home: Path, image: str,
                                                       reason: str) -> None:
    pytester.makepyfile("def test_x(sandbox):\n    pass\n")
    result = pytester.runpytest(f"--msb-image={image}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # before any test runs, whatever KVM this host has
    result.stderr.fnmatch_lines([f"*--msb-image: invalid value {image!r}*{reason}*"])


def test_bad_image_from_env_names_the_variable(pytester: pytest.Pytester, home: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    monkeypatch.setenv("MSB_IMAGE", "no such image")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*environment variable MSB_IMAGE: invalid value 'no such image'*"])


@pytest.mark.parametrize("image", ["python:3.12", "localhost:5000/x:y", "oci:/nowhere/layout", "host",
                                   "docker-archive:/nowhere/a.tar", "dir:/nowhere/rootfs"])
def test_good_image_references_are_not_pulled_at_startup(pytester: pytest.Pytester, home: Path, image: str) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    pytester.runpytest(f"--msb-image={image}").assert_outcomes(passed=1)
    assert not (home / "images").exists()  # syntax only: nothing was fetched or cached


SHARED = """
def test_uses_shared(shared_volume):
    shared_volume.fs.write("x.txt", b"x")
"""


@pytest.mark.parametrize("xdist", [[], ["-n", "2", "-p", "xdist"]], ids=["plain", "xdist"])
def test_shared_volume_lock_stays_inside_the_runs_temp_directory(pytester: pytest.Pytester, home: Path,
                                                                  xdist: list[str]) -> None:
    """The lock file of ``shared_volume`` never lands beside the runs' temp directories (where every run left one,
    for good): it is in this run's base temp, which pytest removes with the run."""
    pytester.makepyfile(SHARED)
    basetemp = pytester.path / "runs" / "basetemp"  # its parent stands for /tmp/pytest-of-USER
    basetemp.parent.mkdir()
    result = pytester.runpytest_subprocess(f"--basetemp={basetemp}", *xdist, timeout=180)
    result.assert_outcomes(passed=1)
    assert list(basetemp.parent.glob("*.lock")) == []
    assert len(list(basetemp.glob("msb-*-shared.lock"))) == 1
