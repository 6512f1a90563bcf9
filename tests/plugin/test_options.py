"""``--msb-*`` options, their ini keys and environment variables, the marker, and their precedence."""

from __future__ import annotations

import json

import pytest

from pytest_microsandbox.plugin._options import OPTIONS

DUMP_SETTINGS = """
import dataclasses, json

def test_dump(msb_sandbox_settings, tmp_path_factory):
    print("SETTINGS=" + json.dumps(dataclasses.asdict(msb_sandbox_settings)))
"""


def settings_of(result: pytest.RunResult) -> dict:
    line = next(ln for ln in result.outlines if "SETTINGS=" in ln)
    return json.loads(line.partition("SETTINGS=")[2].rstrip(".FE"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("MSB_HOME", str(tmp_path / "home"))


def test_defaults(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MSB_HOME")
    pytester.makepyfile(DUMP_SETTINGS)
    settings = settings_of(pytester.runpytest("-s"))
    assert settings == {"image": "host", "home": None, "kernel": None, "memory": 512, "cpus": 1,
                        "isolation": "vm", "boot_timeout": 60.0, "keep": "never", "if_unavailable": "skip",
                        "snapshots": True, "snapshot_keep": 8, "cov": False}


VM_OPTIONS_PROBE = """
    import os
    import pytest

    class Probed(Exception):
        pass

    def pytest_microsandbox_sandbox_config(options):
        raise Probed(options["vm"])
"""


def test_vm_settings_reach_the_sandbox_as_vm_options_not_the_environment(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(VM_OPTIONS_PROBE)
    pytester.makepyfile("""
        import os
        import pytest
        from pytest_microsandbox.sandbox import VmOptions

        def test_probe(sandbox_factory, msb_vm_options):
            with pytest.raises(Exception) as probed:
                sandbox_factory()
            assert probed.value.args[0] == msb_vm_options == VmOptions(kernel=os.environ.get("EXPECTED_KERNEL"),
                                                     snapshots=os.environ["EXPECTED_SNAPSHOTS"] == "true",
                                                     snapshot_keep=int(os.environ["EXPECTED_KEEP"]))
            assert not {"MSB_KERNEL", "MSB_SNAPSHOTS", "MSB_SNAPSHOT_KEEP"} & set(os.environ)
    """)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("EXPECTED_SNAPSHOTS", "true")
        env.setenv("EXPECTED_KEEP", "8")
        pytester.runpytest().assert_outcomes(passed=1)  # the defaults
        env.setenv("EXPECTED_SNAPSHOTS", "false")
        env.setenv("EXPECTED_KEEP", "3")
        env.setenv("EXPECTED_KERNEL", "/boot/k")
        pytester.runpytest("--msb-snapshots=false", "--msb-snapshot-keep=3", "--msb-kernel=/boot/k",
                           ).assert_outcomes(passed=1)


def test_msb_reads_vm_settings_from_the_environment_with_typed_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_microsandbox.cli._environment import vm_options
    from pytest_microsandbox.errors import InvalidConfigError
    from pytest_microsandbox.sandbox import VmOptions

    monkeypatch.setenv("MSB_SNAPSHOTS", "off")
    monkeypatch.setenv("MSB_SNAPSHOT_KEEP", "2")
    monkeypatch.setenv("MSB_KERNEL", "/k")
    assert vm_options() == VmOptions(kernel="/k", snapshots=False, snapshot_keep=2)
    for bad in ("0", "-1", "many"):
        monkeypatch.setenv("MSB_SNAPSHOT_KEEP", bad)
        with pytest.raises(InvalidConfigError, match="MSB_SNAPSHOT_KEEP must be a positive number"):
            vm_options()
    monkeypatch.setenv("MSB_SNAPSHOT_KEEP", "2")
    monkeypatch.setenv("MSB_SNAPSHOTS", "perhaps")
    with pytest.raises(InvalidConfigError, match="MSB_SNAPSHOTS"):
        vm_options()


def test_vm_options_refuse_bad_values() -> None:
    from pytest_microsandbox.errors import InvalidConfigError
    from pytest_microsandbox.sandbox import VmOptions

    for bad in ({"snapshot_keep": 0}, {"snapshot_keep": True}, {"snapshots": "yes"}, {"kernel": ""}):
        with pytest.raises(InvalidConfigError):
            VmOptions(**bad)
    assert VmOptions.from_dict(VmOptions(kernel="/k", snapshot_keep=3).to_dict()) == VmOptions("/k", True, 3)


def test_if_unavailable_defaults_to_fail_on_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(DUMP_SETTINGS)
    assert settings_of(pytester.runpytest("-s"))["if_unavailable"] == "fail"


@pytest.mark.parametrize(
    "flag,value,field,expected",
    [
        ("--msb-image", "python:3.12", "image", "python:3.12"),
        ("--msb-kernel", "/boot/vmlinuz", "kernel", "/boot/vmlinuz"),
        ("--msb-memory", "1G", "memory", 1024),
        ("--msb-cpus", "2", "cpus", 2),
        ("--msb-isolation", "namespace", "isolation", "namespace"),
        ("--msb-boot-timeout", "2.5", "boot_timeout", 2.5),
        ("--msb-keep", "on-failure", "keep", "on-failure"),
        ("--msb-if-unavailable", "fail", "if_unavailable", "fail"),
        ("--msb-snapshot-keep", "3", "snapshot_keep", 3),
        ("--msb-cov", "yes", "cov", True),
    ],
)
def test_each_option_from_cli_env_and_ini(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, flag: str,
                                          value: str, field: str, expected: object) -> None:
    pytester.makepyfile(DUMP_SETTINGS)
    cli = [flag] if flag == "--msb-cov" else [f"{flag}={value}"]  # a flag option takes no value
    assert settings_of(pytester.runpytest("-s", *cli))[field] == expected
    env = "MSB_" + field.upper()
    monkeypatch.setenv(env, value)
    assert settings_of(pytester.runpytest("-s"))[field] == expected
    monkeypatch.delenv(env)
    pytester.makeini(f"[pytest]\nmsb_{field} = {value}\n")
    assert settings_of(pytester.runpytest("-s"))[field] == expected


def test_precedence_marker_cli_env_ini(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\nmsb_image = from-ini\nmsb_cpus = 3\nmsb_memory = 128\nmsb_keep = always\n")
    monkeypatch.setenv("MSB_IMAGE", "from-env")
    monkeypatch.setenv("MSB_CPUS", "4")
    monkeypatch.setenv("MSB_MEMORY", "256")
    pytester.makepyfile(
        """
        import dataclasses, json, pytest

        @pytest.mark.sandbox(image="from-marker", memory_mib=64)
        def test_dump(msb_sandbox_settings):
            print("SETTINGS=" + json.dumps(dataclasses.asdict(msb_sandbox_settings)))
        """
    )
    settings = settings_of(pytester.runpytest("-s", "--msb-image=from-cli", "--msb-cpus=5"))
    assert settings["image"] == "from-marker"  # marker beats the command line
    assert settings["memory"] == 64  # marker beats the environment
    assert settings["cpus"] == 5  # command line beats the environment
    assert settings["keep"] == "always"  # ini applies when nothing else says


@pytest.mark.parametrize(
    "args,message",
    [
        (["--msb-memory=lots"], "--msb-memory: invalid value 'lots'"),
        (["--msb-cpus=0"], "--msb-cpus: invalid value '0'"),
        (["--msb-isolation=container"], "expected one of vm, namespace"),
        (["--msb-keep=sometimes"], "expected one of never, on-failure, always"),
        (["--msb-boot-timeout=-1"], "--msb-boot-timeout: invalid value '-1'"),
        (["--msb-if-unavailable=ignore"], "expected one of skip, fail"),
        (["--msb-snapshot-keep=0"], "--msb-snapshot-keep: invalid value '0'"),
    ],
)
def test_bad_values_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_bad_env_and_ini_values_name_their_source(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    monkeypatch.setenv("MSB_CPUS", "many")
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(["*environment variable MSB_CPUS: invalid value 'many'*"])
    monkeypatch.delenv("MSB_CPUS")
    pytester.makeini("[pytest]\nmsb_keep = maybe\n")
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(["*ini option msb_keep: invalid value 'maybe'*"])


def test_bad_marker_errors_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.sandbox(gpus=2)
        def test_x(msb_sandbox_settings):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown option 'gpus'; valid options: boot_timeout, cpus, env, *volumes, workdir*"])


def test_report_header(pytester: pytest.Pytester, tmp_path) -> None:
    from _vmcore.host import detect_kvm
    from _vmcore.kernels import find_kernel

    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--msb-image=alpine:3.20", "--msb-isolation=namespace")
    result.stdout.fnmatch_lines([f"microsandbox: isolation=namespace, kvm={detect_kvm().kind}, "
                                 f"kernel={find_kernel()}, image=alpine:3.20, home={tmp_path / 'home'}",
                                 "microsandbox: limits: *namespace sandboxes*"])


def test_report_header_names_a_missing_kernel(pytester: pytest.Pytester, tmp_path) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(f"--msb-kernel={tmp_path / 'no-such-kernel'}")
    result.stdout.fnmatch_lines(["microsandbox: *kernel=none (*no-such-kernel*"])


def test_help_lists_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    for option in OPTIONS:
        result.stdout.fnmatch_lines([f"*{option.flag}*"])
