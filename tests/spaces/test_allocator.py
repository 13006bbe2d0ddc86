"""spaces.allocator: freed training memory is reused inside the block, and handed back after it.

Each case runs in a fresh interpreter. Whether glibc can serve a 64 MiB block from its main heap depends on the
process's address-space layout: in a long test session, other mappings can sit where the heap would grow, and then
glibc maps such blocks on its own, whatever ``mallopt`` says (its fallback when ``brk`` fails). A fresh process is
what a training worker is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from sparsearch.spaces import allocator

pytestmark = pytest.mark.skipif(not allocator.available(), reason="glibc's mallopt is not available here")

PAGES = 64 * (1 << 20) // 4096
"""Pages of one 64 MiB block: above the largest mmap threshold glibc's dynamic adjustment can reach on 64-bit
(32 MiB), so outside a block each one is mapped afresh whatever earlier blocks did to the thresholds."""

_MEASURE = """
import json, resource, torch
from sparsearch.spaces import allocator

def faults(rounds=6, size=64 << 20):
    # minor page faults of allocating, touching and freeing `size` bytes `rounds` times (a training loop's batches)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        block = torch.ones(size // 4)  # float32
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
"""


def _run(body: str, **env: str) -> dict:
    import os

    code = _MEASURE + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freed_blocks_are_reused_inside_and_returned_after() -> None:
    out = _run("""
        outside = faults()
        with allocator.reuse_freed_memory():
            inside = faults()
        out = {"outside": outside, "inside": inside, "after": faults()}
    """)
    assert out["outside"] >= 5 * PAGES  # every round maps and faults its 64 MiB in again
    assert out["inside"] <= 2 * PAGES  # the first round faults it in; later rounds reuse it
    assert out["after"] >= PAGES  # the kept memory went back to the kernel when the block ended: it faults in again


def test_nested_blocks_keep_the_setting_until_the_outermost_ends() -> None:
    out = _run("""
        with allocator.reuse_freed_memory():
            with allocator.reuse_freed_memory():
                pass
            out = {"inner_ended": faults()}
    """)
    assert out["inner_ended"] <= 2 * PAGES


def test_turned_off_by_the_environment() -> None:
    out = _run("""
        assert not allocator.available()
        with allocator.reuse_freed_memory():
            out = {"inside": faults()}
    """, **{allocator.ENV: "0"})
    assert out["inside"] >= 5 * PAGES
