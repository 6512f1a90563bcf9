"""Run as ``python -m tests.vmcore.snapshot_child '<json>'``: restore a machine from a snapshot in a fresh process,
bind images to its empty disk slots (``null`` disks), run it until the console shows a pattern, print one JSON line,
then hold the machine (and its memory mapping) until stdin closes, so the parent can read this process's smaps
while its siblings run too."""

from __future__ import annotations

import json
import sys
import time

from _vmcore.errors import VmmError
from _vmcore.machine import Disk, Machine, MachineConfig


def main() -> int:
    args = json.loads(sys.argv[1])
    cfg = MachineConfig(kernel=args["kernel"], memory_mib=args["memory_mib"],
                        disks=[Disk(d, read_only=d is not None, serial="rootfs" if d else "") for d in args["disks"]],
                        cmdline_extra=args["cmdline_extra"])
    t0 = time.monotonic()
    out: dict = {}
    try:
        m = Machine.restore(args["snapshot"], cfg, verify_memory=args.get("verify", True))
        out["loaded_s"] = time.monotonic() - t0
        m.start()
        for slot, path, serial in args.get("bind_disks", []):  # a template's empty slots get their images
            m.bind_disk(slot, path, serial=serial)
        out["started_s"] = time.monotonic() - t0
        try:
            m.wait_for_console(args["until"], timeout=args["timeout"])
            for pattern in args.get("also", []):  # printed before `until` or soon after: give it a moment
                m.wait_for_console(pattern, timeout=30)
            out["reached_s"] = time.monotonic() - t0
        except VmmError as e:
            out["error"] = f"{type(e).__name__}: {e}"
        out.update(console=m.console.text(), device_errors=m.device_errors,
                   disk_reads=[d.counters["read"] for d in m.disks])
    except VmmError as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    print(json.dumps(out), flush=True)
    sys.stdin.read()
    m.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
