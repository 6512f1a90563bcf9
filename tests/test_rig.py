"""The nested rig's own parts that run without QEMU: the job script, the module load order, and the report stream
that carries each inner test's outcome and failure text back to the outer run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.rig.kernel import MODULES, _module_closure
from tests.rig.l1 import run_script


def test_run_script_quotes_and_keeps_the_outer_runs_variables_out() -> None:
    script = run_script(["python3", "-c", "print('a b')"], "/work/it's", {
        "PATH": "/usr/bin:/bin", "SPACED": "x y", "PYTEST_CURRENT_TEST": "t", "MSB_RIG_CPUS": "2", "BAD-NAME": "1"})
    assert "export PATH=/usr/bin:/bin" in script and "export SPACED='x y'" in script
    assert "PYTEST_CURRENT_TEST" not in script and "MSB_RIG_CPUS" not in script and "BAD-NAME" not in script
    assert "cd '/work/it'\"'\"'s' || exit 126" in script
    assert script.rstrip().endswith("exec python3 -c 'print('\"'\"'a b'\"'\"')'")


def test_modules_load_after_what_they_need(tmp_path: Path) -> None:
    deps = {
        "kernel/arch/x86/kvm/kvm-amd.ko": ["kernel/arch/x86/kvm/kvm.ko", "kernel/virt/lib/irqbypass.ko"],
        "kernel/arch/x86/kvm/kvm.ko": ["kernel/virt/lib/irqbypass.ko"],
        "kernel/virt/lib/irqbypass.ko": [],
        "kernel/sound/unwanted.ko": [],
    }
    deps.update({f"kernel/m/{m}.ko": [] for m in MODULES if m != "kvm-amd"})
    (tmp_path / "modules.dep").write_text("".join(f"{k}: {' '.join(v)}\n" for k, v in deps.items()))
    order = [p.name for p in _module_closure(tmp_path)]
    assert "unwanted.ko" not in order
    assert order.index("irqbypass.ko") < order.index("kvm.ko") < order.index("kvm-amd.ko")


def test_a_missing_module_is_named(tmp_path: Path) -> None:
    from tests.rig.kernel import RigUnavailable

    (tmp_path / "modules.dep").write_text("kernel/fs/fuse/fuse.ko:\n")
    with pytest.raises(RigUnavailable, match="no module kvm-amd"):
        _module_closure(tmp_path)


def test_inner_reports_carry_each_outcome_and_the_failure_text(pytester: pytest.Pytester, pytestconfig: pytest.Config,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))  # the rig runs from the checkout
    pytester.makepyfile(
        """
        import pytest

        def test_passes():
            pass

        def test_fails():
            assert 6 * 7 == 41, "inner failure text"

        def test_skips():
            pytest.skip("inner skip reason")
        """
    )
    log = pytester.path / "reports.jsonl"
    pytester.runpytest_subprocess("-p", "tests.rig.inner", f"--rig-reports={log}", "-p", "no:cacheprovider")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    finished = [r["finished"] for r in records if "finished" in r]
    assert [n.rsplit("::", 1)[1] for n in finished] == ["test_passes", "test_fails", "test_skips"]
    assert records[-1] == {"done": 1}
    reports = [pytestconfig.hook.pytest_report_from_serializable(config=pytestconfig, data=r["report"])
               for r in records if "report" in r]
    outcome = {(r.nodeid.rsplit("::", 1)[1], r.when): r.outcome for r in reports}
    assert outcome[("test_passes", "call")] == "passed"
    assert outcome[("test_fails", "call")] == "failed" and outcome[("test_skips", "call")] == "skipped"
    failed = next(r for r in reports if r.failed)
    assert "inner failure text" in str(failed.longrepr)
