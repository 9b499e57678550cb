"""The operating system's name for a thread of ours, so ``top -H``, ``ps -L`` and ``/proc/<pid>/task`` show
which thread spends the CPU (Python's thread names stay inside Python).

``bench/density.py`` splits a server's CPU by these names: the inference engines against the event loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache

INFERENCE = "vg-inference"
OFFLINE = "vg-offline"


@cache
def _pthread() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def name_this_thread(name: str) -> bool:
    """Name the calling thread for the operating system (Linux keeps 15 bytes); False where it cannot."""
    libc = _pthread()
    if libc is None:
        return False
    setname = libc.pthread_setname_np
    setname.argtypes = [ctypes.c_ulong, ctypes.c_char_p]
    getself = libc.pthread_self
    getself.restype = ctypes.c_ulong
    return int(setname(getself(), name.encode()[:15])) == 0
