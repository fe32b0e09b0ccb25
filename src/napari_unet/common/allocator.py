"""Give freed memory back to the system promptly (glibc), as dask's workers do.

glibc's allocator raises its mmap threshold each time a large block is freed (up to 32 MB),
so after a few chunk-sized arrays come and go, arrays of a few MB are carved from the heap and
their memory stays with the process when freed. The 3D post-processing of a synthetic
256x390x390 window of probabilities, two chunks at once, kept about 0.4 GB of freed chunk
arrays in its resident set that way (peak RSS 1.69 GB, of which 0.60 GB live arrays at most).
Fixing the trim threshold (``mallopt(M_TRIM_THRESHOLD)``, which also stops the mmap threshold
from moving) returns it: the same run peaked at 1.25 GB.

dask.distributed sets the same value for its workers (``MALLOC_TRIM_THRESHOLD_=65536`` in
``distributed.nanny.pre-spawn-environ``). A value the user set in that variable is kept.

The threshold only trims the top of each heap. Between two large pieces of work (the blocks
of a volume, then their merge), :func:`trim_freed_memory` also hands back the free pages
inside the heaps (``malloc_trim(0)``, dask's ``Worker`` memory trim).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

#: bytes of free memory at the top of the heap above which glibc returns it to the system
TRIM_THRESHOLD = 65536
#: ``M_TRIM_THRESHOLD`` in glibc's ``malloc.h``
_M_TRIM_THRESHOLD = -1


@functools.cache
def _libc():
    """glibc through ctypes, or ``None`` off Linux / without glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):  # musl and other C libraries have neither
        return None
    return libc


def trim_freed_memory() -> bool:
    """Hand the free memory inside glibc's heaps back to the system now (``malloc_trim(0)``).

    Returns ``True`` where some was returned; ``False`` where none was, or off glibc.
    """
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


@functools.cache
def return_freed_memory() -> bool:
    """Make glibc return freed memory to the system promptly; ``True`` where it was set.

    Process-wide and idempotent. Does nothing (``False``) off Linux, without glibc, or where
    ``MALLOC_TRIM_THRESHOLD_`` is already in the environment (the user's value holds).
    """
    libc = _libc()
    if libc is None or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
