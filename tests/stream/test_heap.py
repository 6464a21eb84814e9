"""convstream.stream.heap: free pages inside the C heap go back to the kernel."""

from __future__ import annotations

import pytest

from convstream.stream import heap

MIB = 1 << 20

pytestmark = pytest.mark.skipif(not heap.available(), reason="needs glibc's malloc_trim")


def test_free_pages_between_live_chunks_are_released() -> None:
    # 4000-byte objects come from malloc's heap; keeping one in 64 alive pins the heap's top, so
    # glibc's own trimming (top of the heap only) can give back none of the ~380 MiB freed.
    chunks = [bytes(4000) for _ in range(100_000)]
    survivors = chunks[::64]
    del chunks
    fragmented = heap.rss_bytes()

    released = heap.release_free_heap()

    assert released >= 150 * MIB
    assert heap.rss_bytes() <= fragmented - 150 * MIB
    assert all(len(chunk) == 4000 for chunk in survivors)  # live memory is left alone


def test_reports_what_it_released_not_the_heap_size() -> None:
    heap.release_free_heap()
    assert heap.release_free_heap() < 16 * MIB  # nothing new was freed in between
