"""TideMQ client library: `Admin`, `Producer`, `Consumer` (anyio: runs under trio and
asyncio); `client.sync` has blocking versions for scripts; `tidemq` is the CLI."""

from client.admin import Admin
from client.consumer import Consumer, Message
from client.errors import TideMQError
from client.producer import Deliveries, Delivery, Producer, RecordMetadata
from client.records import GroupMetadata

__all__ = [
    "Admin",
    "Consumer",
    "Deliveries",
    "Delivery",
    "GroupMetadata",
    "Message",
    "Producer",
    "RecordMetadata",
    "TideMQError",
]
