"""``msb snapshot ls|rm|prune``: the vm backend's snapshot templates (``<home>/snapshots``)."""

from __future__ import annotations

import argparse
import time

from pytest_microsandbox.errors import SandboxError
from pytest_microsandbox.host import msb_home

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (``msb`` starts cold every time)
if TYPE_CHECKING:
    from pytest_microsandbox.templates import Templates


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("snapshot", help="list and remove the snapshot templates vm sandboxes start from")
    commands = parser.add_subparsers(dest="snapshot_command", required=True, metavar="SUBCOMMAND")
    commands.add_parser("ls", help="list templates").set_defaults(handler=run_ls)
    rm = commands.add_parser("rm", help="remove templates by id (or its first 8+ characters)")
    rm.add_argument("ids", nargs="+")
    rm.set_defaults(handler=run_rm)
    prune = commands.add_parser("prune", help="remove every template but the N most recently used (the next "
                                "sandbox of a removed configuration builds its template again)")
    prune.add_argument("--keep", type=_count, default=0, metavar="N", help="templates to keep (default 0)")
    prune.set_defaults(handler=run_prune)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of templates, not {text!r}")
    return int(text)


def _cache(args: argparse.Namespace) -> Templates:
    from pytest_microsandbox.templates import Templates

    return Templates(msb_home(args.home))


def run_ls(args: argparse.Namespace) -> int:
    print(f"{'ID':12}  {'IMAGE':20}  {'MEMORY':>7}  {'VCPUS':>5}  {'DISK':>9}  {'CREATED':16}  LAST USED")
    for t in _cache(args).list():
        image = str(t.key.get("image", "?")).removeprefix("sha256:")[:20]
        print(f"{t.id[:12]:12}  {image:20}  {t.key.get('memory_mib', '?'):>5}Mi  {t.key.get('vcpus', '?'):>5}  "
              f"{t.disk_bytes / 2**20:7.1f}Mi  {_when(t.created):16}  {_when(t.last_used)}")
    return 0


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def run_rm(args: argparse.Namespace) -> int:
    cache = _cache(args)
    ids = [t.id for t in cache.list()]
    for wanted in args.ids:
        matches = [i for i in ids if i.startswith(wanted)] if len(wanted) >= 8 else [i for i in ids if i == wanted]
        if len(matches) != 1:
            raise SandboxError(f"{'no' if not matches else 'more than one'} template matches {wanted!r}")
        cache.remove(matches[0])
        print(matches[0])
    return 0


def run_prune(args: argparse.Namespace) -> int:
    for name in _cache(args).prune(keep=args.keep):
        print(name)
    return 0
