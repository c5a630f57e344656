"""TideMQ's replication engine: a sans-I/O Raft core (see docs/raft.md).

The public names live in private-ish modules and are re-exported here, so
``from raft import RaftNode, Config, MemoryStorage`` is all a caller needs.
"""

from raft.core import (
    Config,
    NotLeader,
    PeerStatus,
    ProposalDropped,
    RaftError,
    RaftNode,
    RandomSource,
    Ready,
    Status,
)
from raft.log import RaftInvariantError
from raft.progress import ProgressState
from raft.storage import MemoryStorage, Storage, StorageError
from raft.types import (
    NONE,
    Append,
    AppendResponse,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    Role,
    Snapshot,
    SoftState,
    TimeoutNow,
    Vote,
    VoteResponse,
)

__all__ = [
    "NONE",
    "Append",
    "AppendResponse",
    "Config",
    "ConfChange",
    "ConfChangeOp",
    "ConfState",
    "Entry",
    "EntryKind",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "MemoryStorage",
    "Message",
    "NotLeader",
    "PeerStatus",
    "ProgressState",
    "ProposalDropped",
    "RaftError",
    "RaftInvariantError",
    "RaftNode",
    "RandomSource",
    "Ready",
    "Role",
    "Snapshot",
    "SoftState",
    "Status",
    "Storage",
    "StorageError",
    "TimeoutNow",
    "Vote",
    "VoteResponse",
]
