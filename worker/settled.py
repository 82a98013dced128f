"""Whether a file's stat can vouch for what was read of it.

Caches that keep what they made of a file (a parsed page, a listing, a rendered
property set) key it on the file's stat and trust it while the stat is the same.  That
holds only once the file has settled: file times come from the kernel's coarse clock,
so two changes within one of its ticks leave the same mtime and ctime, and what was
read between them would pass for the newer version.  A file changed within the last
SETTLED seconds is read again every time instead.
"""

from __future__ import annotations

import os
import time

SETTLED = 2.0


def settled(st: os.stat_result) -> bool:
    """Whether the file's last change is old enough that another would show in st."""
    return time.time() - max(st.st_mtime, st.st_ctime) > SETTLED
