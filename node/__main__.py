"""`python -m node --id 1 --listen 127.0.0.1:9401 --peers ... --data DIR`: run one broker."""

import gc
import logging
import sys

import trio

from node.broker import serve
from node.config import NodeConfig
from segments.batch import codec_in_use


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
    try:
        trio.run(serve, config)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
