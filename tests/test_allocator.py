"""The allocator setting that gives freed chunk arrays back to the system."""

import sys

import pytest

from napari_unet.common.allocator import return_freed_memory


def test_a_trim_threshold_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert return_freed_memory.__wrapped__() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_takes_the_trim_threshold(monkeypatch):
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert return_freed_memory.__wrapped__() is True


def _resident_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trim_hands_back_freed_memory_inside_the_heap():
    import numpy as np

    from napari_unet.common.allocator import trim_freed_memory

    trim_freed_memory()
    parts = [np.ones(2048) for _ in range(8000)]  # 16 KB each: malloc's heap, not mmap
    pin = np.ones(2048)  # above them: the freed memory is not at the heap's top
    held = _resident_mb()
    del parts
    assert trim_freed_memory() is True
    assert _resident_mb() < held - 64  # of the ~125 MB freed
    del pin
