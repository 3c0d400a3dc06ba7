"""The one-time heap trim of `zmesh join`: freed C-heap pages go back to the OS."""

from __future__ import annotations

import os
import platform

import pytest
from zmesh.cli.heap import release_free_heap

GLIBC = platform.libc_ver()[0] == "glibc"


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_freed_heap_pages_go_back_to_the_os() -> None:
    # 600-byte objects come from malloc, not Python's small-object arenas. Blocks kept
    # after them pin the top of the heap, so freeing the first ones leaves pages that
    # glibc keeps (free() alone gives back only the top) until trimmed.
    blocks = [bytes(600) for _ in range(100_000)]
    pin = [bytes(600) for _ in range(100)]
    del blocks[:]
    before = resident_mib()
    assert release_free_heap() is True
    assert resident_mib() < before - 30  # about 60 MiB were freed
    assert len(pin) == 100


@pytest.mark.skipif(GLIBC, reason="only elsewhere")
def test_without_glibc_it_says_so() -> None:
    assert release_free_heap() is False
