"""``msb image pull|ls|rm|prune``: the image cache from the command line."""

from __future__ import annotations

import argparse
import sys
import time

from pytest_microsandbox.errors import ImageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 10 ms of a cold start)
if TYPE_CHECKING:  # the image code loads when a sub-command runs, not for every ``msb`` call
    from pytest_microsandbox.images import ImageCache, Platform


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("image", help="pull, list and remove cached images")
    commands = parser.add_subparsers(dest="image_command", required=True, metavar="SUBCOMMAND")

    pull = commands.add_parser("pull", help="pull an image and build its root disk")
    pull.add_argument("reference", help="NAME[:TAG|@DIGEST], oci:DIR[:TAG], docker-archive:FILE, dir:ROOTFS")
    pull.add_argument("--platform", help="os/arch[/variant] (default: this host's)")
    pull.add_argument("--insecure-registry", action="append", default=None, metavar="HOST",
                      help="allow plain http to HOST (loopback always is); repeatable")
    pull.add_argument("--quiet", "-q", action="store_true", help="print only the image digest")
    pull.set_defaults(handler=run_pull)

    ls = commands.add_parser("ls", help="list cached images")
    ls.add_argument("--quiet", "-q", action="store_true", help="print digests only")
    ls.set_defaults(handler=run_ls)

    rm = commands.add_parser("rm", help="remove images by name or digest (or its first 12+ hex characters)")
    rm.add_argument("images", nargs="+")
    rm.set_defaults(handler=run_rm)

    prune = commands.add_parser("prune", help="remove unnamed images, unused blobs and abandoned builds")
    prune.add_argument("--all", "-a", action="store_true", help="remove every image")
    prune.set_defaults(handler=run_prune)


def _platform(text: str | None) -> Platform | None:
    from pytest_microsandbox.images import Platform

    if not text:
        return None
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ImageError(f"invalid platform {text!r}: expected os/arch[/variant]")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def run_pull(args: argparse.Namespace) -> int:
    from pytest_microsandbox.images import TerminalProgress, parse_reference, pull_image

    progress = None if args.quiet else TerminalProgress()
    image = pull_image(args.reference, home=args.home, platform=_platform(args.platform),
                       insecure=args.insecure_registry, progress=progress)
    if args.quiet:
        print(image.digest)
    else:
        print(f"{parse_reference(args.reference)}: {image.digest}")
        print(f"root disk: {image.disk}")
    return 0


def run_ls(args: argparse.Namespace) -> int:
    from pytest_microsandbox.images import ImageCache

    images = ImageCache(args.home).list_images()
    if args.quiet:
        for image in images:
            print(image.digest)
        return 0
    print(f"{'IMAGE ID':<14}{'SIZE':>10}  {'CREATED':<18}NAMES")
    for image in images:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(image.created))
        names = ", ".join(image.references) or "<none>"
        print(f"{image.short_id:<14}{image.size / (1 << 20):>8.1f}Mi  {created:<18}{names}")
    return 0


def _find(cache: ImageCache, text: str) -> tuple[str, str | None]:
    """(image digest, the name it was found by, or None when given an id)."""
    from pytest_microsandbox.images import parse_reference

    candidate = text.removeprefix("sha256:")
    if len(candidate) >= 12 and all(c in "0123456789abcdef" for c in candidate):
        matches = [i.digest for i in cache.list_images() if i.digest.split(":", 1)[1].startswith(candidate)]
        if len(matches) == 1:
            return matches[0], None
        if len(matches) > 1:
            raise ImageError(f"ambiguous image id {text!r}")
    try:
        name = str(parse_reference(text))
    except ValueError:
        name = text
    for key in (name, text):
        digest = cache.lookup(key)
        if digest is not None:
            return digest, key
    raise ImageError(f"image not found: {text}")


def run_rm(args: argparse.Namespace) -> int:
    from pytest_microsandbox.images import ImageCache

    cache = ImageCache(args.home)
    status = 0
    for text in args.images:
        try:
            digest, name = _find(cache, text)
        except ImageError as err:
            print(f"msb: error: {err}", file=sys.stderr)
            status = 1
            continue
        if name is not None and len(cache.references_of(digest)) > 1:
            cache.untag(name)  # as docker rmi: a name of an image with others only loses that name
            print(f"untagged {name}")
            continue
        cache.remove(digest)
        print(f"removed {digest}")
    return status


def run_prune(args: argparse.Namespace) -> int:
    from pytest_microsandbox.images import ImageCache

    removed, freed = ImageCache(args.home).prune(all_images=args.all)
    print(f"removed {removed} images, freed {freed / (1 << 20):.1f} MiB of blobs and builds")
    return 0
