"""This process's peak memory, in one unit everywhere it is reported."""

from __future__ import annotations

import platform
import resource


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, in GB (10^9 bytes)."""
    # ru_maxrss is in bytes on macOS and in KiB on Linux.
    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9
