"""Fixtures shared by the node's tests."""

import pytest

from node.aio import DiskSync


@pytest.fixture
def kernel_syncer():
    """An open `DiskSync` (skipped where io_uring is not to be had)."""
    syncer = DiskSync()
    if not syncer.open():
        pytest.skip("no io_uring here: every sync goes to a worker thread")
    yield syncer
    syncer.close()
