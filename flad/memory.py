"""Hand the memory freed after a big file back to the system.

libxml2 builds one node per element, attribute and text: a 50 MiB declaration full of
records is about 600 MiB of nodes. Once the tree is freed, glibc keeps those pages for
the process, so a service that checked one big file would hold them for days.
`malloc_trim` returns every free page; where the C library is not glibc, nothing is
done (and nothing is lost but the memory).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Give freed heap pages back to the system; False where that cannot be done."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
