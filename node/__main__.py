"""`python -m node --id 1 --listen 127.0.0.1:9401 --peers ... --data DIR`: run one broker."""

import logging
import sys

import trio

from node.broker import serve
from node.config import NodeConfig


def main(argv: list[str] | None = None) -> None:
    config = NodeConfig.from_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s n{config.node_id} %(levelname)s %(name)s: %(message)s",
    )
    try:
        trio.run(serve, config)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
