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
