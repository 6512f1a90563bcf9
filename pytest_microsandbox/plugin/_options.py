"""The plugin's settings: each one a ``--msb-*`` option, an ``msb_*`` ini key and an ``MSB_*`` environment variable.

Precedence: a test's ``sandbox`` marker, then the command line, then the environment, then the ini file, then the
default. A bad value is a ``pytest.UsageError`` naming where it came from.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import pytest

from pytest_microsandbox.errors import InvalidConfigError
from pytest_microsandbox.sandbox import VmOptions
from pytest_microsandbox.validation import parse_bool, parse_positive_int, parse_size_mib

KEEP_CHOICES = ("never", "on-failure", "always")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be positive")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text

    return parse


def _image(text: str) -> str:
    """An image reference, checked for syntax only (nothing is pulled): a typo is a usage error at startup, not a
    failure of each test that boots (or a skip, where KVM is missing)."""
    if text != "host":  # the default needs no parser (importing the image package costs every run ~0.1 s)
        from pytest_microsandbox.images import parse_reference

        parse_reference(text)
    return text


def _default_if_unavailable() -> str:
    # On CI a missing engine is a failure, so a broken runner cannot turn a suite silently green.
    return "fail" if os.environ.get("CI") else "skip"


@dataclass(frozen=True)
class Option:
    name: str  # the settings field, e.g. "boot_timeout" -> --msb-boot-timeout, msb_boot_timeout, MSB_BOOT_TIMEOUT
    help: str
    parse: Callable[[str], Any]
    default: str | Callable[[], str] | None = None
    metavar: str | None = None
    is_flag: bool = False  # a bare --msb-NAME on the command line means true

    @property
    def flag(self) -> str:
        return "--msb-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "msb_" + self.name

    @property
    def env(self) -> str:
        return "MSB_" + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("image", "image of the sandboxes: a registry reference (python:3.12), oci:DIR, docker-archive:FILE, "
           "dir:ROOTFS, or host (default)", _image, "host", "IMAGE"),
    Option("home", "state directory (default ~/.microsandbox)", str, None, "DIR"),
    Option("kernel", "guest kernel: a kernel image or a libkrunfw .so (default: found automatically)", str, None,
           "PATH"),
    Option("memory", "guest memory in MiB, or with a unit (512, 1G)", lambda t: parse_size_mib(t, "memory"), "512",
           "SIZE"),
    Option("cpus", "guest vCPUs", lambda t: parse_positive_int(t, "cpus"), "1", "N"),
    Option("isolation", "vm (a KVM guest) or namespace (Linux namespaces: weaker, explicit opt-in)",
           _choice("vm", "namespace"), "vm", "KIND"),
    Option("boot_timeout", "seconds a sandbox may take to become ready", _positive_float, "60", "SECONDS"),
    Option("keep", "leave sandboxes running after the test: never, on-failure or always",
           _choice(*KEEP_CHOICES), "never", "WHEN"),
    Option("if_unavailable", "when the sandbox engine cannot run here: skip the test or fail it "
           "(default skip, but fail when CI is set)", _choice("skip", "fail"), _default_if_unavailable, "ACTION"),
    Option("snapshots", "start vm sandboxes from a snapshot template of their configuration (built by the first "
           "sandbox, under <home>/snapshots) instead of booting each", lambda t: parse_bool(t, "snapshots"),
           "true"),
    Option("snapshot_keep", "snapshot templates kept under <home>/snapshots: after a build, the least recently used "
           "beyond this many are removed", lambda t: parse_positive_int(t, "snapshot_keep"),
           str(VmOptions.snapshot_keep), "N"),
    Option("cov", "measure Python run inside sandboxes of the host image with coverage and combine it into this "
           "run's coverage data", lambda t: parse_bool(t, "cov"), "false", is_flag=True),
)
_BY_NAME = {o.name: o for o in OPTIONS}
RUN_WIDE = ("home", "cov", "snapshots", "snapshot_keep")  # not per test: no marker keyword
MARKER_ALIASES = {"memory_mib": "memory"}  # sandbox_factory's spelling of a setting
# sandbox_factory's options that are no setting: a marker passes them to every sandbox of its test as they are.
FACTORY_ONLY = ("env", "labels", "name", "security", "volumes", "workdir")
MARKER_KEYS = tuple(sorted({n for n in _BY_NAME if n not in RUN_WIDE} | set(MARKER_ALIASES) | set(FACTORY_ONLY)))


def _check_marker(marker: pytest.Mark) -> None:
    if marker.args:
        raise InvalidConfigError("@pytest.mark.sandbox takes keyword arguments only, e.g. sandbox(image='...')")
    for key in marker.kwargs:
        if key in RUN_WIDE:
            raise InvalidConfigError(f"@pytest.mark.sandbox: {key!r} applies to the whole run, not one test: set "
                                     f"{_BY_NAME[key].flag}, {_BY_NAME[key].env} or {_BY_NAME[key].ini}")
        if key not in MARKER_KEYS:
            raise InvalidConfigError(f"@pytest.mark.sandbox: unknown option {key!r}; valid options: "
                                     f"{', '.join(MARKER_KEYS)}")


def marker_factory_options(marker: pytest.Mark | None) -> dict[str, Any]:
    """The keywords of a ``@pytest.mark.sandbox(...)`` marker that ``sandbox_factory`` takes as they are (env,
    volumes, ...); the others are settings (``Settings.with_marker``)."""
    if marker is None:
        return {}
    _check_marker(marker)
    return {k: v for k, v in marker.kwargs.items() if k in FACTORY_ONLY}


@dataclass(frozen=True)
class Settings:
    image: str
    home: str | None
    kernel: str | None
    memory: int
    cpus: int
    isolation: str
    boot_timeout: float
    keep: str
    if_unavailable: str
    snapshots: bool
    snapshot_keep: int
    cov: bool

    def with_marker(self, marker: pytest.Mark | None) -> Settings:
        """These settings with a ``@pytest.mark.sandbox(...)`` marker's keywords applied on top."""
        if marker is None:
            return self
        _check_marker(marker)
        changes: dict[str, Any] = {}
        for key, value in marker.kwargs.items():
            if key not in FACTORY_ONLY:
                name = MARKER_ALIASES.get(key, key)
                changes[name] = _parse(_BY_NAME[name], str(value), f"@pytest.mark.sandbox({key}=...)")
        return replace(self, **changes)


def register(parser: pytest.Parser) -> None:
    group = parser.getgroup("microsandbox", "microVM sandboxes (pytest-microsandbox)")
    for option in OPTIONS:
        help_text = f"{option.help} [env {option.env}, ini {option.ini}]"
        if option.is_flag:
            group.addoption(option.flag, dest="msb_" + option.name, action="store_const", const="true",
                            default=None, help=help_text)
        else:
            group.addoption(option.flag, dest="msb_" + option.name, default=None, metavar=option.metavar,
                            help=help_text)
        parser.addini(option.ini, help=option.help, default=None)


def _parse(option: Option, text: str, source: str) -> Any:
    try:
        return option.parse(text)
    except (ValueError, InvalidConfigError) as err:
        raise pytest.UsageError(f"{source}: invalid value {text!r}: {err}") from None


def resolve(config: pytest.Config, environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from the command line, environment, ini file and defaults, in that order of precedence."""
    values: dict[str, Any] = {}
    for option in OPTIONS:
        candidates = [
            (config.getoption("msb_" + option.name), option.flag),
            (environ.get(option.env) or None, f"environment variable {option.env}"),
            (config.getini(option.ini) or None, f"ini option {option.ini}"),
        ]
        text, source = next(((v, s) for v, s in candidates if v is not None), (None, "default"))
        if text is None:
            default = option.default() if callable(option.default) else option.default
            text = default
        values[option.name] = None if text is None else _parse(option, str(text), source)
    assert {f.name for f in fields(Settings)} == set(values)
    return Settings(**values)
