"""``msb volume create|ls|inspect|rm``."""

from __future__ import annotations

import argparse
import time

from pytest_microsandbox.errors import InvalidConfigError
from pytest_microsandbox.host import msb_home

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 10 ms of a cold start)
if TYPE_CHECKING:  # the volume code loads in the handlers, not for every ``msb`` call
    from pytest_microsandbox.sync import VolumeHandle


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("volume", aliases=["vol"], help="manage named volumes")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    create = verbs.add_parser("create", help="create a named volume")
    create.add_argument("name")
    create.add_argument("--kind", choices=["dir", "disk"], default="dir", help="a directory (default) or an ext4 disk")
    create.add_argument("--size", help="disk size for --kind disk, e.g. 20G")
    create.add_argument("--quota", help="size limit of a directory volume, e.g. 1G")
    create.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="add a label (repeatable)")
    create.set_defaults(handler=_create)

    ls = verbs.add_parser("ls", aliases=["list"], help="list volumes")
    ls.add_argument("-q", "--quiet", action="store_true", help="print names only")
    ls.add_argument("--format", choices=["table", "json"], default="table")
    ls.set_defaults(handler=_ls)

    inspect = verbs.add_parser("inspect", help="show a volume as JSON")
    inspect.add_argument("name", nargs="+")
    inspect.set_defaults(handler=_inspect)

    mount = verbs.add_parser("mount", help="serve a volume's files on a host directory through our FUSE server, "
                             "with its quota (and --readonly) enforced, until interrupted")
    mount.add_argument("name")
    mount.add_argument("mountpoint")
    mount.add_argument("--readonly", action="store_true", help="refuse every change (EROFS; mounted read-only)")
    mount.add_argument("--allow-other", action="store_true",
                       help="let every user of this host in, not only you (as far as the files' modes allow)")
    mount.set_defaults(handler=_mount)

    rm = verbs.add_parser("rm", aliases=["remove"], help="remove volumes (refused while mounted)")
    rm.add_argument("name", nargs="+")
    rm.set_defaults(handler=_rm)


def _labels(items: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidConfigError(f"--label {item!r}: expected KEY=VALUE")
        if key in labels:
            raise InvalidConfigError(f"--label {key!r} given more than once")
        labels[key] = value
    return labels


def _create(args: argparse.Namespace) -> int:
    from pytest_microsandbox.sync import Volume
    from pytest_microsandbox.validation import parse_size_mib

    volume = Volume.create(
        args.name,
        kind=args.kind,
        size_mib=parse_size_mib(args.size, "--size") if args.size else None,
        quota_mib=parse_size_mib(args.quota, "--quota") if args.quota else None,
        labels=_labels(args.label),
        home=msb_home(args.home),
    )
    print(volume.name)
    return 0


def describe(handle: VolumeHandle) -> dict[str, object]:
    return {
        "name": handle.name,
        "kind": handle.kind.value,
        "path": str(handle.path),
        "quota_mib": handle.quota_mib,
        "size_mib": handle.size_mib,
        "used_bytes": handle.used_bytes,
        "labels": handle.labels,
        "created_at": handle.created_at,
    }


def _ls(args: argparse.Namespace) -> int:
    from pytest_microsandbox.sync import Volume

    handles = Volume.list(home=msb_home(args.home))
    if args.quiet:
        for handle in handles:
            print(handle.name)
    elif args.format == "json":
        import json

        print(json.dumps([describe(h) for h in handles], indent=2))
    else:
        rows = [("NAME", "KIND", "QUOTA", "SIZE", "USED", "CREATED")]
        for h in handles:
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.created_at / 1000))
            rows.append((h.name, h.kind.value, _mib(h.quota_mib), _mib(h.size_mib), _human(h.used_bytes), created))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import json

    from pytest_microsandbox.sync import Volume

    home = msb_home(args.home)
    print(json.dumps([describe(Volume.get(name, home=home)) for name in args.name], indent=2))
    return 0


def _mount(args: argparse.Namespace) -> int:
    import signal

    from pytest_microsandbox.host import mount_on_host

    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # taken by sigwait below, never by a server thread
    try:
        with mount_on_host(args.name, args.mountpoint, home=msb_home(args.home), readonly=args.readonly,
                           allow_other=args.allow_other) as handle:
            quota = f", quota {handle.quota_mib} MiB" if handle.quota_mib else ""
            print(f"mounted {handle.name} on {args.mountpoint}{quota}; Ctrl-C to unmount", flush=True)
            signal.sigwait(stop)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop)
    return 0


def _rm(args: argparse.Namespace) -> int:
    from pytest_microsandbox.sync import Volume

    home = msb_home(args.home)
    for name in args.name:
        Volume.remove(name, home=home)
        print(name)
    return 0


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value}M"


def _human(size: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return str(size)
