"""Process-level memory settings that make large CPU tensors cheap to allocate.

Inference and training allocate and free the same few hundred MB of large tensors for every frame or
batch.  With glibc's defaults every block above 32 MB (and many above 128 KB) is a fresh ``mmap``:
the kernel hands out zeroed 4 KB pages one fault at a time and takes them back on ``free``.  On the
2-core reference machine one EDVR-M decode at 320x180 took ~800k page faults and 2.8 s of system
time for 9 s of wall time.  Two standard switches remove most of it:

* ``THP_MEM_ALLOC_ENABLE=1`` -- PyTorch's own option (c10's CPU allocator): allocations of 2 MB and
  more are aligned to and advised as transparent huge pages, 512x fewer faults.  PyTorch reads it
  once, at its first CPU allocation, so it must be in the environment before torch allocates
  anything; the CLI sets it before importing torch.  A value the user set is kept.
* ``mallopt(M_MMAP_THRESHOLD / M_TRIM_THRESHOLD)`` -- freed blocks up to 32 MB stay in the process
  heap and are reused without faults.  The resident size then stays at the working set's peak
  instead of shrinking between frames; it does not grow with the number of frames.
* ``mallopt(M_TOP_PAD)`` 512 MB -- the heap grows in 512 MB steps of address space (pages are only
  resident once used) instead of one ``brk`` and its faults per growth. Training steps, which allocate
  many medium blocks, still faulted without it: edvr-s (batch 8, 32x32 LR, bf16, AMD EPYC Zen 4, 2
  threads) 0.70-0.74 s per step, 3.4-3.6k faults and 0.08-0.11 s system time with the two switches
  above; 0.64-0.67 s, ~250 faults and 0.03-0.04 s with the pad too (128 MB: no better than none).

Measured (one decode, EDVR-M 320x180, 2 cores): 730-850k page faults and 2.6-3.2 s system time by
default; 27-41k and 1.5-2.4 s with THP; 14k and 0.8-1.6 s with both, peak RSS unchanged (1.64 GB).
Since EDVR's inference keeps its large maps at one frame (reused from the heap anyway), srkit's own
EDVR speed is the same with or without these settings (benchmarks/upscale_speed.py, with and without
--tune-allocator); they matter for larger frames, training batches and other code in the process.

The ``srkit`` command calls :func:`tune_allocator` before importing torch.  The library does not do
it on its own (it is a process-wide setting: the heap is not returned to the OS); Python users who
want it call it first thing, or export ``THP_MEM_ALLOC_ENABLE=1``.  No torch import here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
# Blocks up to 32 MB (glibc's own ceiling for its adaptive threshold) come from the heap and are
# reused; larger ones stay mmapped (with THP they fault in 2 MB pages).  A higher threshold removes
# the remaining faults too but fragments the heap: measured +50% peak RSS, still growing after
# 8 EDVR-M frames, so no.
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 2**31 - 1  # (an int) never give the heap top back to the OS
_TOP_PAD = 512 << 20

_done = False


def tune_allocator() -> bool:
    """Apply the settings above once per process (no-op after the first call, off with
    ``SRKIT_ALLOCATOR_TUNING=0``).  Returns whether ``mallopt`` was applied (glibc Linux only)."""
    global _done
    if _done or os.environ.get("SRKIT_ALLOCATOR_TUNING", "1") == "0":
        return False
    _done = True
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    settings = ((_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_TOP_PAD, _TOP_PAD))
    return all([bool(mallopt(param, value)) for param, value in settings])  # a list: apply all, even after a failure
