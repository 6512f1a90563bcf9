"""``msb doctor``: what this host can run, and why."""

from __future__ import annotations

import argparse

_MEANING = {  # by _vmcore.host.KvmKind (a StrEnum: its members look these up)
    "hardware": "microVMs run normally",
    "kvm_pvm": "guest kernels boot in kernel mode only; `vm` tests are skipped (use the namespace backend)",
    "none": "no microVMs on this host; `vm` tests are skipped (use the namespace backend)",
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("doctor", help="report the KVM kind, kernel and state directory")
    parser.add_argument("--kernel", help="kernel or libkrunfw .so to check (default: $MSB_KERNEL, then discovery)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from _vmcore.errors import KernelLoadError
    from _vmcore.host import detect_kvm
    from _vmcore.kernels import find_kernel
    from pytest_microsandbox._home import msb_home
    from pytest_microsandbox.sandbox._namespace import namespace_limits

    kvm = detect_kvm()
    print(f"kvm:    {kvm.kind} - {kvm.reason}")
    print(f"        {_MEANING[kvm.kind]}")
    try:
        kernel = find_kernel(getattr(args, "kernel", None))
        print(f"kernel: {kernel}")
    except KernelLoadError as e:
        print(f"kernel: none - {e}")
    print(f"home:   {msb_home(args.home)}")
    print(f"limits: {namespace_limits()}")
    return 0

