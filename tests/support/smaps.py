"""How much of a file mapping a process really holds, from ``/proc/PID/smaps`` (to show that restored machines
share their snapshot's unchanged memory pages)."""

from __future__ import annotations

FIELDS = ("Size", "Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty")


def mapping_usage(pid: int | str, path_suffix: str | None = None, start: int | None = None) -> dict[str, int]:
    """Sum, in KiB, of each smaps field over the mappings of ``pid`` whose path ends with ``path_suffix`` (or
    that begin at host address ``start``, for anonymous guest RAM); ``count`` says how many matched."""
    totals = dict.fromkeys(FIELDS, 0)
    totals["count"] = 0
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if not head.endswith(":"):  # a mapping header: "start-end perms offset dev inode [path]"
                parts = line.split()
                if start is not None:
                    inside = int(parts[0].split("-")[0], 16) == start
                else:
                    inside = len(parts) >= 6 and parts[5].endswith(path_suffix)
                totals["count"] += inside
            elif inside and head[:-1] in totals:
                totals[head[:-1]] += int(line.split()[1])
    return totals
