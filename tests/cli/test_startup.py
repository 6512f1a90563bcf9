"""``msb`` starts fast: it builds only the sub-parser it needs and imports only what the command uses."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from pytest_microsandbox.cli import _main

REPO = Path(__file__).resolve().parents[2]
PATH = ":".join([str(REPO), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])  # sys.path without site
HEAVY = ("asyncio", "typing", "tenacity", "pytest_microsandbox.sandbox", "pytest_microsandbox.images",
         "pytest_microsandbox.agent", "pytest_microsandbox.volumes._aio", "_vmcore.kvm")

# Runs ``msb ARGS`` in a fresh interpreter without site (whose .pth hooks import what they like, typing among them)
# and prints which of the heavy modules it imported.
PROBE = textwrap.dedent(
    """
    import sys
    sys.path[:0] = sys.argv.pop(1).split(":")
    import contextlib, io, json
    from pytest_microsandbox.cli import main
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(sys.argv[2:])
    print(json.dumps({"code": code, "heavy": [m for m in json.loads(sys.argv[1]) if m in sys.modules]}))
    """
)


def probe(home: Path, *argv: str) -> dict:
    done = subprocess.run([sys.executable, "-S", "-c", PROBE, PATH, json.dumps(HEAVY), "--home", str(home), *argv],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("argv", [["volume", "create", "v"], ["volume", "ls"], ["volume", "inspect", "v"],
                                  ["volume", "rm", "v"]])
def test_commands_that_start_no_vm_import_nothing_heavy(tmp_path: Path, argv: list[str]) -> None:
    if argv != ["volume", "create", "v"]:
        assert probe(tmp_path, "volume", "create", "v")["code"] == 0
    assert probe(tmp_path, *argv) == {"code": 0, "heavy": []}


def test_importing_the_package_imports_nothing_heavy() -> None:
    code = (f"import sys; sys.path[:0] = {PATH!r}.split(':'); import pytest_microsandbox; heavy = {HEAVY!r}; "
            "print([m for m in heavy if m in sys.modules]); "
            "from pytest_microsandbox import Volume, Sandbox, VolumeNotFoundError, MountConfig; "
            "print(Volume.__module__, Sandbox.__module__, VolumeNotFoundError.__module__)")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         check=True).stdout.splitlines()
    assert out == ["[]", "pytest_microsandbox.volumes._aio pytest_microsandbox.sandbox._aio pytest_microsandbox.errors"]


@pytest.mark.parametrize(
    "argv,word",
    [
        (["volume", "ls"], "volume"),
        (["--home", "/h", "vol", "rm", "x"], "vol"),
        (["--home=/h", "ps"], "ps"),
        (["--home", "volume", "doctor"], "doctor"),  # a home named like a command is the home
        (["--help"], None),
        (["-h", "volume"], None),
        (["--hom", "/h", "volume", "ls"], None),  # abbreviations are argparse's business: the full parser answers
        (["bogus"], None),
        ([], None),
    ],
)
def test_the_command_word_is_found_or_the_full_parser_is_built(argv: list[str], word: str | None) -> None:
    assert _main._command_word(argv) == word


def _choices(parser) -> set[str]:  # noqa: ANN001 (argparse.ArgumentParser)
    [sub] = [a for a in parser._actions if a.dest == "command"]
    return set(sub.choices)


def test_the_command_table_matches_what_the_modules_register() -> None:
    everything = _choices(_main.build_parser())
    assert everything == {w for words in _main._MODULES.values() for w in words}
    for words in _main._MODULES.values():
        for word in words:
            assert _choices(_main.build_parser([word])) == set(words)


def test_doctor_explains_every_kind_of_kvm() -> None:
    from _vmcore.host import KvmKind
    from pytest_microsandbox.cli.doctor import _MEANING

    assert all(kind in _MEANING for kind in KvmKind)
