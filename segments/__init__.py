"""TideMQ segments: the on-disk partition log.

Record batches in Kafka's v2 format (`segments.batch`, `segments.control`), segment
files with sparse offset and time indexes (`segments.segment`, `segments.index`),
and the partition log with recovery, truncation, retention and leader epochs
(`segments.log`). The package imports nothing else of TideMQ, and does blocking file
I/O only: callers on trio run it in a worker thread or accept the blocking.
"""

from .batch import (
    BatchHeader,
    Record,
    TimestampType,
    build_batch,
    build_batch_pure,
    codec_in_use,
    decode_records,
    decode_records_pure,
    iter_batches,
    parse_header,
    reload_codec,
    stamp,
    stamped,
    stamped_prefix,
    validate,
    verify,
)
from .compression import Compression
from .config import LogConfig
from .control import (
    ControlType,
    build_carrier,
    build_control_batch,
    build_transaction_marker,
    control_type_of,
    transaction_marker_of,
)
from .errors import (
    BatchTooLargeError,
    CorruptBatchError,
    InvalidEpochError,
    InvalidOffsetError,
    InvalidTimestampError,
    LogClosedError,
    OffsetOutOfRangeError,
    SegmentError,
    TruncatedBatchError,
    UnsupportedCompressionError,
)
from .log import Log
from .segment import LogSlice

__all__ = [
    "BatchHeader",
    "BatchTooLargeError",
    "Compression",
    "ControlType",
    "CorruptBatchError",
    "InvalidEpochError",
    "InvalidOffsetError",
    "InvalidTimestampError",
    "Log",
    "LogClosedError",
    "LogConfig",
    "LogSlice",
    "OffsetOutOfRangeError",
    "Record",
    "SegmentError",
    "TimestampType",
    "TruncatedBatchError",
    "UnsupportedCompressionError",
    "build_batch",
    "build_batch_pure",
    "build_carrier",
    "build_control_batch",
    "build_transaction_marker",
    "codec_in_use",
    "control_type_of",
    "decode_records",
    "decode_records_pure",
    "iter_batches",
    "parse_header",
    "reload_codec",
    "stamp",
    "stamped",
    "stamped_prefix",
    "validate",
    "transaction_marker_of",
    "verify",
]
