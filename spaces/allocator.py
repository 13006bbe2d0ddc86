"""Keep the memory a training loop frees for its next batch, instead of handing it back to the kernel.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves every block above its mmap threshold (at
most 32 MiB) with a fresh ``mmap`` and unmaps it on ``free``, and trims the heap top above 128 KiB. A CNN batch's
activations and gradients are such blocks (256 Fashion-MNIST images x 55 channels x 28 x 28 floats is 44 MiB), so
every batch page-faults its working set in again: on the fashion_cnn study about 40% of a training process's CPU
time was kernel time, and a quarter epoch took 15.5 s instead of 8.8 s on one thread
(``bench/results/cnn-step.json``, channels-last in both).

:func:`reuse_freed_memory` serves large blocks from the heap and keeps up to :data:`TRIM_THRESHOLD` of freed memory
at its top while training runs, as jemalloc or tcmalloc (which PyTorch recommends preloading for CPU work) would,
without asking users to preload anything. The peak memory is that of the working set, as before; it is returned to
the kernel when the outermost block ends. It does nothing on other C libraries (macOS, musl), or with
``SPARSEARCH_KEEP_FREED_MEMORY=0``.

After the first block the process keeps glibc's documented default thresholds, but as fixed values: setting either
parameter through ``mallopt`` switches off glibc's dynamic raising of the mmap threshold for the rest of the
process, and nothing can switch it back on.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# glibc's mallopt parameters (malloc.h) and their documented defaults
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
TRIM_THRESHOLD = 1 << 30
"""Freed memory kept at the heap's top while training (1 GiB); more is returned to the kernel at once."""

ENV = "SPARSEARCH_KEEP_FREED_MEMORY"

_lock = threading.Lock()
_depth = 0


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc's own handle (its ``mallopt``, never another library's), looked up on first use, not at import, and
    without ``ctypes.util.find_library``, which starts a subprocess; ``None`` on other C libraries."""
    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc's soname on every Linux it supports
        libc.mallopt, libc.malloc_trim  # noqa: B018  (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


def available() -> bool:
    """Whether :func:`reuse_freed_memory` changes anything here (glibc, and not turned off by the environment)."""
    return os.environ.get(ENV, "1") != "0" and _libc() is not None


@contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """Inside the block, large blocks come from the heap and freed memory stays for reuse (nested blocks and
    threads share one setting; the outermost exit restores glibc's defaults and trims the heap)."""
    global _depth
    libc = _libc() if available() else None
    if libc is None:
        yield
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
