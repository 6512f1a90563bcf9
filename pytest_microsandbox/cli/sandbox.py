"""``msb run|create|exec|ps|stop|rm``: sandboxes from the command line.

``msb run`` owns its sandbox for one command. ``msb create`` starts a detached owner process that serves the
sandbox's agent on a relay socket, so later ``msb exec`` calls (from any process) can use it.
"""

from __future__ import annotations

import argparse
import sys

from pytest_microsandbox.cli._environment import default_isolation, vm_options
from pytest_microsandbox.errors import InvalidConfigError, KvmUnavailableError
from pytest_microsandbox.host import msb_home

# The sandbox machinery (and asyncio, the agent, the image code behind it) loads in the handlers that use it, so
# ``msb volume ls`` and ``msb --help`` do not pay for it.

_MOUNT_HELP = {
    "--mount-dir": ("HOSTDIR:DEST[:OPTIONS]", "share a host directory"),
    "--mount-file": ("HOSTFILE:DEST[:OPTIONS]", "share one host file"),
    "--mount-named": ("VOLUME:DEST[:OPTIONS]", "mount a named volume (msb volume create)"),
    "--mount-disk": ("IMAGE:DEST[:OPTIONS]", "attach a disk image file (vm; filesystem detected in the guest)"),
    "--tmpfs": ("DEST[:OPTIONS]", "a fresh in-memory filesystem"),
    "-v": ("SOURCE:DEST[:OPTIONS]", "a host path (starting with /, . or ~) or else a named volume, as docker -v"),
    "--volume": ("SOURCE:DEST[:OPTIONS]", "the same as -v"),
}
_ISOLATION_NOTE = {"namespace": "namespace (weaker: shares the host kernel)", "vm": "vm"}
_IMAGE_HELP = """\
IMAGE is one of:
  python:3.12, alpine            an image in a registry (Docker Hub when no registry is named)
  localhost:5000/team/app:tag    an image in another registry; pin one with @sha256:DIGEST
  oci:DIR[:TAG]                  an OCI image layout directory
  docker-archive:FILE.tar        a `docker save` archive
  dir:ROOTFS                     a root filesystem directory, used as it is
  host                           the host's own root filesystem
Registry images are pulled once and cached under <home>/images (see msb image pull|ls|rm).
"""
# The library's refusal names the API's and pytest's opt-ins; here the opt-in is a flag of this command.
_KVM_HINT = " To run sandboxes as Linux namespaces"


class _MountAction(argparse.Action):
    """Keep every mount flag, in order, with the flag that gave it (the grammar depends on the flag)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        mounts = list(getattr(namespace, "mounts", None) or [])
        mounts.append((option_string, values))
        namespace.mounts = mounts


def _add_sandbox_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="sandbox name (default: generated)")
    parser.add_argument("--isolation", choices=["vm", "namespace"],
                        help="vm (default, needs hardware KVM) or namespace (weaker, explicit opt-in)")
    parser.add_argument("--memory", type=int, default=512, help="MiB of guest memory")
    parser.add_argument("--cpus", type=int, default=1, help="virtual CPUs (default 1)")
    parser.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                        help="set an environment variable in the guest (repeatable)")
    parser.add_argument("-w", "--workdir", help="the command's working directory in the guest")
    parser.add_argument("--security", choices=["default", "restricted"], default="default",
                        help="restricted: no privileges in the guest, every mount nosuid and nodev")
    parser.add_argument("--boot-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="how long the guest may take to be ready (default 60)")
    mounts = parser.add_argument_group(
        "mounts (repeatable, in order)",
        "OPTIONS: a comma-separated list of ro, rw, noexec, nosuid, nodev;\n"
        "  size=SIZE (--tmpfs), quota=SIZE (--mount-dir), format=raw|qcow2|vmdk and fstype=TYPE (--mount-disk).\n"
        "  SIZE is MiB (100) or has a unit (512M, 1G).")
    for flag, (metavar, what) in _MOUNT_HELP.items():
        mounts.add_argument(flag, action=_MountAction, dest="mounts", metavar=metavar, default=[], help=what)


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run a command in a fresh sandbox, then remove it", epilog=_IMAGE_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("image", help="the guest's root filesystem: see IMAGE below")
    _add_sandbox_options(run)
    run.add_argument("command_argv", nargs="*", metavar="-- CMD", help="the command and its arguments, after --")
    run.set_defaults(handler=_run)

    create = sub.add_parser("create", help="start a sandbox that stays up (used with msb exec, stopped by msb stop)",
                            epilog=_IMAGE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    create.add_argument("image", help="the guest's root filesystem: see IMAGE below")
    _add_sandbox_options(create)
    create.set_defaults(handler=_create)

    exec_ = sub.add_parser("exec", help="run a command in a sandbox made by msb create")
    exec_.add_argument("name")
    exec_.add_argument("command_argv", nargs="*", metavar="-- CMD", help="the command and its arguments, after --")
    exec_.set_defaults(handler=_exec)

    ps = sub.add_parser("ps", help="list sandboxes (running, stopped and exited: until msb rm)")
    ps.add_argument("--running", action="store_true", help="only starting and running ones")
    ps.add_argument("--format", choices=["table", "json"], default="table")
    ps.set_defaults(handler=_ps)

    stop = sub.add_parser("stop", help="stop sandboxes (graceful, then forced)")
    stop.add_argument("name", nargs="+")
    stop.add_argument("-t", "--timeout", type=float, default=10.0)
    stop.set_defaults(handler=_stop)

    rm = sub.add_parser("rm", help="remove sandboxes (stopping them first)")
    rm.add_argument("name", nargs="+")
    rm.set_defaults(handler=_rm)


def _env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidConfigError(f"--env {item!r}: expected KEY=VALUE")
        env[key] = value
    return env


def _config_options(args: argparse.Namespace) -> dict:
    from pytest_microsandbox.cli.mount_flags import parse_mount_flags

    isolation = args.isolation or default_isolation()
    return {"name": args.name, "image": args.image, "volumes": parse_mount_flags(args.mounts or []),
            "memory_mib": args.memory, "cpus": args.cpus, "env": _env(args.env), "workdir": args.workdir,
            "security": args.security, "isolation": isolation, "boot_timeout": args.boot_timeout,
            "vm": vm_options() if isolation == "vm" else None}


def _cli_kvm_refusal(err: KvmUnavailableError) -> KvmUnavailableError:
    """The refusal with the command line's opt-in (``--isolation namespace``) instead of pytest's and the API's."""
    reason = str(err).split(_KVM_HINT, 1)[0]
    return KvmUnavailableError(f"{reason} To run sandboxes as Linux namespaces instead (weaker isolation: they share "
                               "the host kernel), opt in with --isolation namespace (or MSB_ISOLATION=namespace)")


def _command(command: list[str]) -> list[str]:
    if not command:
        raise InvalidConfigError("no command given: msb ... -- CMD [ARGS...]")
    return command


def _emit(result) -> int:
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.exit_code if result.exit_code is not None else 128 + (result.signal or 0)


def _run(args: argparse.Namespace) -> int:
    from pytest_microsandbox.sync import Sandbox

    command = _command(args.command_argv)
    options = _config_options(args)
    try:
        sb = Sandbox.create(options.pop("name"), home=msb_home(args.home), **options)
    except KvmUnavailableError as err:
        raise _cli_kvm_refusal(err) from None
    with sb:
        return _emit(sb.exec(*command))


def _create(args: argparse.Namespace) -> int:
    from pytest_microsandbox.sandbox import start_detached

    try:
        name = start_detached(msb_home(args.home), _config_options(args))
    except KvmUnavailableError as err:
        raise _cli_kvm_refusal(err) from None
    print(name)
    return 0


def _exec(args: argparse.Namespace) -> int:
    from pytest_microsandbox.sync import Sandbox

    command = _command(args.command_argv)
    sandbox = Sandbox.get(args.name, home=msb_home(args.home))
    try:
        return _emit(sandbox.exec(*command))
    finally:
        sandbox.close()


def _ps(args: argparse.Namespace) -> int:
    import datetime as dt
    import json

    from pytest_microsandbox.sync import Sandbox

    records = Sandbox.list(home=msb_home(args.home))
    if args.running:
        records = [r for r in records if r.status in ("starting", "running")]
    if args.format == "json":
        print(json.dumps([{"name": r.name, "backend": r.backend, "status": r.status,
                           "pid": r.owner.pid if r.owner else None, "image": r.config.get("image"),
                           "created_at": r.created_at} for r in records], indent=2))
        return 0
    print(f"{'NAME':<24} {'STATUS':<9} {'PID':>8}  {'IMAGE':<20} {'CREATED':<19} ISOLATION")
    for r in records:
        created = dt.datetime.fromtimestamp(r.created_at / 1000).strftime("%Y-%m-%d %H:%M:%S")
        pid = str(r.owner.pid) if r.owner else "-"
        print(f"{r.name:<24} {r.status:<9} {pid:>8}  {str(r.config.get('image', '')):<20} {created:<19} "
              f"{_ISOLATION_NOTE.get(r.backend, r.backend)}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from pytest_microsandbox.sync import Sandbox

    for name in args.name:
        Sandbox.get(name, home=msb_home(args.home)).stop(args.timeout)
    return 0


def _rm(args: argparse.Namespace) -> int:
    from pytest_microsandbox.sync import Sandbox

    for name in args.name:
        Sandbox.get(name, home=msb_home(args.home)).remove()
    return 0
