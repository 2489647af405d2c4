"""The node's heap trimming and memory reports (l3rocc_ros.memwatch), in this process."""

import ctypes
import logging
import sys
import threading

import pytest

from l3rocc_ros import memwatch

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc and /proc')

BLOCK = 64 * 1024        # below glibc's mmap threshold: served from an arena
BLOCKS = 3200            # 200 MiB


def _fragment_an_arena() -> None:
    """Malloc 200 MiB in 64 KiB blocks in a thread of its own, free all but every 64th block.

    The blocks kept pin the arena's top, so glibc cannot give the freed pages back by itself:
    the state the node's arenas drift into under a stream of images.
    """
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    blocks = []
    for _ in range(BLOCKS):
        p = libc.malloc(BLOCK)
        libc.memset(p, 1, BLOCK)        # resident
        blocks.append(p)
    for i, p in enumerate(blocks):
        if i % 64:
            libc.free(p)
    _fragment_an_arena.kept = [p for i, p in enumerate(blocks) if not i % 64]


def test_release_free_memory_returns_freed_arena_pages() -> None:
    libc = ctypes.CDLL(None)
    if not hasattr(libc, 'malloc_trim') or memwatch.rss_mb() is None:
        pytest.skip('needs glibc (malloc_trim) and /proc')
    worker = threading.Thread(target=_fragment_an_arena)
    worker.start()
    worker.join()
    try:
        before = memwatch.rss_mb()
        assert memwatch.release_free_memory()
        after = memwatch.rss_mb()
    finally:
        for p in _fragment_an_arena.kept:
            libc.free(ctypes.c_void_p(p))
    # ~197 MiB were freed; glibc kept them resident until the trim
    assert before - after > 100.0, f'RSS {before:.0f} -> {after:.0f} MiB'


def test_malloc_figures_follow_allocations() -> None:
    figures = memwatch.malloc_figures()
    if not figures:
        pytest.skip('no mallinfo2 (glibc < 2.33)')
    assert set(figures) == {'heap_mb', 'in_use_mb', 'free_mb', 'mmapped_mb'}
    assert figures['in_use_mb'] > 0 and figures['heap_mb'] >= figures['in_use_mb']


def test_memwatch_from_environment(monkeypatch, caplog) -> None:
    monkeypatch.delenv('L3ROCC_MEMWATCH', raising=False)
    assert memwatch.from_environment() is None
    monkeypatch.setenv('L3ROCC_MEMWATCH', 'often')
    with caplog.at_level(logging.WARNING, logger='l3rocc_core.memwatch'):
        assert memwatch.from_environment() is None
    assert 'is not a number of seconds' in caplog.text
    monkeypatch.setenv('L3ROCC_MEMWATCH', '3600')
    monkeypatch.setenv('L3ROCC_TRACEMALLOC', '1')
    import tracemalloc
    was_tracing = tracemalloc.is_tracing()
    watch = memwatch.from_environment()
    try:
        assert watch is not None and watch.trace and tracemalloc.is_tracing()
        with caplog.at_level(logging.INFO, logger='l3rocc_core.memwatch'):
            first = watch.report()
            kept = [bytearray(4096) for _ in range(256)]     # 1 MiB of Python objects
            watch.report()
        assert first.startswith('memwatch: rss ') and 'python traced' in first
        # the second report names this file's line as the top growth since the first
        growth = [r.getMessage() for r in caplog.records if 'growth since first' in r.getMessage()]
        assert growth and 'test_memwatch.py' in growth[0].split(';')[0], growth
        del kept
    finally:
        watch.stop()
        if not was_tracing:
            tracemalloc.stop()
