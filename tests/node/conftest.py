"""Fixtures shared by the node's tests."""

import pytest

from node.aio import DiskSync


@pytest.fixture
def kernel_syncer():
    """An open `DiskSync` (skipped where the kernel offers no Linux AIO)."""
    syncer = DiskSync()
    if not syncer.open():
        pytest.skip("this kernel or machine offers no Linux AIO: every sync goes to a worker thread")
    yield syncer
    syncer.close()
