"""``msb doctor``: what this host can run, and why."""

from __future__ import annotations

import argparse

from _vmcore.host import detect_kvm


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("doctor", help="report the KVM kind, kernel and state directory")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pytest_microsandbox._home import msb_home

    kvm = detect_kvm()
    print(f"kvm:    {kvm.kind} - {kvm.reason}")
    print(f"home:   {msb_home(args.home)}")
    return 0
