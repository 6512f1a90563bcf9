"""``msb doctor``: what this host can run, and why."""

from __future__ import annotations

import argparse

_MEANING = {  # by pytest_microsandbox.host.KvmKind (a StrEnum: its members look these up)
    "hardware": "microVMs run normally",
    "kvm_pvm": "guest kernels boot in kernel mode only; `vm` tests are skipped (use the namespace backend)",
    "none": "no microVMs on this host; `vm` tests are skipped (use the namespace backend)",
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("doctor", help="report the KVM kind, kernel and state directory")
    parser.add_argument("--kernel", help="kernel or libkrunfw .so to check (default: $MSB_KERNEL, then discovery)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pytest_microsandbox.cli._environment import default_kernel
    from pytest_microsandbox.errors import MicrosandboxError
    from pytest_microsandbox.host import guest_kernel, kvm_status, msb_home, namespace_limits

    kvm = kvm_status()
    print(f"kvm:    {kvm.kind} - {kvm.reason}")
    print(f"        {_MEANING[kvm.kind]}")
    try:
        kernel = guest_kernel(getattr(args, "kernel", None) or default_kernel())
        print(f"kernel: {kernel}")
    except MicrosandboxError as e:
        print(f"kernel: none - {e}")
    print(f"home:   {msb_home(args.home)}")
    print(f"limits: {namespace_limits()}")
    return 0

