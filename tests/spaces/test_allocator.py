"""spaces.allocator: freed training memory is reused inside the block, and handed back after it."""

from __future__ import annotations

import resource

import pytest
import torch

from sparsearch.spaces import allocator

pytestmark = pytest.mark.skipif(not allocator.available(), reason="glibc's mallopt is not available here")

MIB = 1 << 20
# The blocks are 64 MiB: above the largest mmap threshold glibc's dynamic adjustment can reach on 64-bit (32 MiB),
# so outside a block each one is mapped afresh whatever earlier tests (or earlier blocks) did to the thresholds.


def _faults_of_repeated_allocation(rounds: int = 6, size: int = 64 * MIB) -> int:
    """Minor page faults of allocating, touching and freeing ``size`` bytes ``rounds`` times (the pattern of a
    training loop's batch activations)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        block = torch.ones(size // 4)  # float32
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_freed_blocks_are_reused_inside_and_returned_after() -> None:
    pages = 64 * MIB // 4096
    outside = _faults_of_repeated_allocation()
    with allocator.reuse_freed_memory():
        inside = _faults_of_repeated_allocation()
    after = _faults_of_repeated_allocation()
    assert outside >= 5 * pages  # every round maps and faults its 64 MiB in again
    assert inside <= 2 * pages  # the first round faults it in; later rounds reuse it
    assert after >= pages  # the kept memory went back to the kernel when the block ended: it faults in again


def test_nested_blocks_keep_the_setting_until_the_outermost_ends() -> None:
    pages = 64 * MIB // 4096
    with allocator.reuse_freed_memory():
        with allocator.reuse_freed_memory():
            pass
        inner_ended = _faults_of_repeated_allocation()
    assert inner_ended <= 2 * pages


def test_turned_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.ENV, "0")
    assert not allocator.available()
    with allocator.reuse_freed_memory():
        assert _faults_of_repeated_allocation() >= 5 * 64 * MIB // 4096
