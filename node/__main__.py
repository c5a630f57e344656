"""`python -m node --id 1 --listen 127.0.0.1:9401 --peers ... --data DIR`: run one broker."""

import ctypes
import gc
import logging
import platform
import sys

# kio (the Kafka schemas) imports hypothesis wherever it is installed, and importing
# hypothesis turns trio's scheduler into its deterministic test mode (each pass's tasks
# sorted and shuffled, about 2% of a node's CPU) and adds a start-up import. A node
# never uses it.
sys.modules.setdefault("hypothesis", None)  # type: ignore[arg-type]

import trio  # noqa: E402

from node.broker import serve  # noqa: E402
from node.config import NodeConfig  # noqa: E402
from segments.batch import codec_in_use  # noqa: E402

# glibc's mallopt parameters
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
KEEP_FREED_BYTES = 128 << 20
OWN_MAPPING_BYTES = 32 << 20  # glibc's largest


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for the next request instead of handing it back.

    A broker's buffers come and go at the same sizes (a batch in, its copies,
    its frames out). By default each of 128 KiB or more is a fresh mmap and a freed heap
    top is returned to the kernel, so every request faults its pages in again: 0.58 ms
    for 256 KiB on a VM whose host backs memory lazily, 0.06 ms reused. Kept (up to
    KEEP_FREED_BYTES at the heap's top), they are reused warm. False where the C library
    is not glibc (nothing changed)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (M_MMAP_THRESHOLD, OWN_MAPPING_BYTES),
            (M_TRIM_THRESHOLD, KEEP_FREED_BYTES),
            (M_TOP_PAD, 16 << 20),
        )
    )


def main(argv: list[str] | None = None) -> None:
    config = NodeConfig.from_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s n{config.node_id} %(levelname)s %(name)s: %(message)s",
    )
    # The compiled record codec validates every produce; loading it (about 0.15 s of
    # imports) belongs to start-up, not to the first client's request.
    log = logging.getLogger("node")
    log.info("record validation: %s", codec_in_use())
    # Latency: everything imported so far lives as long as the process; frozen, a full
    # collection no longer walks it (full collections took 20-60 ms each during a send
    # benchmark; with it frozen none took over 0.2 ms). A worker thread back from an
    # fsync waits for the interpreter lock at most this long while the event loop runs
    # (default 5 ms).
    gc.freeze()
    sys.setswitchinterval(0.0005)
    log.info("freed memory kept for reuse: %s", "yes" if keep_freed_memory() else "no (not glibc)")
    try:
        trio.run(serve, config)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
