from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Durability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DURABILITY_UNSPECIFIED: _ClassVar[Durability]
    MEMORY: _ClassVar[Durability]
    WRITTEN: _ClassVar[Durability]
    FSYNCED: _ClassVar[Durability]
DURABILITY_UNSPECIFIED: Durability
MEMORY: Durability
WRITTEN: Durability
FSYNCED: Durability

class Entry(_message.Message):
    __slots__ = ("id", "key", "payload", "sequence", "appended_at_ns", "metadata", "lamport_clock", "content_hash")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    APPENDED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    LAMPORT_CLOCK_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    id: str
    key: str
    payload: bytes
    sequence: int
    appended_at_ns: int
    metadata: _containers.ScalarMap[str, str]
    lamport_clock: int
    content_hash: bytes
    def __init__(self, id: _Optional[str] = ..., key: _Optional[str] = ..., payload: _Optional[bytes] = ..., sequence: _Optional[int] = ..., appended_at_ns: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., lamport_clock: _Optional[int] = ..., content_hash: _Optional[bytes] = ...) -> None: ...

class AppendRequest(_message.Message):
    __slots__ = ("context_id", "key", "payload", "metadata", "received_lamport_clock", "idempotency_key")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_LAMPORT_CLOCK_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    key: str
    payload: bytes
    metadata: _containers.ScalarMap[str, str]
    received_lamport_clock: int
    idempotency_key: str
    def __init__(self, context_id: _Optional[str] = ..., key: _Optional[str] = ..., payload: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., received_lamport_clock: _Optional[int] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class AppendResponse(_message.Message):
    __slots__ = ("entry", "duplicate", "durability")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    entry: Entry
    duplicate: bool
    durability: Durability
    def __init__(self, entry: _Optional[_Union[Entry, _Mapping]] = ..., duplicate: _Optional[bool] = ..., durability: _Optional[_Union[Durability, str]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("context_id", "key", "after_sequence", "limit", "newest_first", "before_sequence", "key_prefix")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NEWEST_FIRST_FIELD_NUMBER: _ClassVar[int]
    BEFORE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    key: str
    after_sequence: int
    limit: int
    newest_first: bool
    before_sequence: int
    key_prefix: str
    def __init__(self, context_id: _Optional[str] = ..., key: _Optional[str] = ..., after_sequence: _Optional[int] = ..., limit: _Optional[int] = ..., newest_first: _Optional[bool] = ..., before_sequence: _Optional[int] = ..., key_prefix: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("entries", "latest_sequence", "merkle_root")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LATEST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    latest_sequence: int
    merkle_root: bytes
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., latest_sequence: _Optional[int] = ..., merkle_root: _Optional[bytes] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("context_id",)
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    def __init__(self, context_id: _Optional[str] = ...) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("snapshot", "sequence", "metadata")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    snapshot: bytes
    sequence: int
    metadata: SnapshotMetadata
    def __init__(self, snapshot: _Optional[bytes] = ..., sequence: _Optional[int] = ..., metadata: _Optional[_Union[SnapshotMetadata, _Mapping]] = ...) -> None: ...

class SnapshotMetadata(_message.Message):
    __slots__ = ("created_at_ns", "entry_count", "version", "merkle_root")
    CREATED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    ENTRY_COUNT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    created_at_ns: int
    entry_count: int
    version: int
    merkle_root: bytes
    def __init__(self, created_at_ns: _Optional[int] = ..., entry_count: _Optional[int] = ..., version: _Optional[int] = ..., merkle_root: _Optional[bytes] = ...) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ("context_id", "snapshot", "fail_if_exists")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    FAIL_IF_EXISTS_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    snapshot: bytes
    fail_if_exists: bool
    def __init__(self, context_id: _Optional[str] = ..., snapshot: _Optional[bytes] = ..., fail_if_exists: _Optional[bool] = ...) -> None: ...

class LoadResponse(_message.Message):
    __slots__ = ("entries_restored", "latest_sequence", "merkle_root")
    ENTRIES_RESTORED_FIELD_NUMBER: _ClassVar[int]
    LATEST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    entries_restored: int
    latest_sequence: int
    merkle_root: bytes
    def __init__(self, entries_restored: _Optional[int] = ..., latest_sequence: _Optional[int] = ..., merkle_root: _Optional[bytes] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("context_id", "key", "from_sequence", "signal_caught_up")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    key: str
    from_sequence: int
    signal_caught_up: bool
    def __init__(self, context_id: _Optional[str] = ..., key: _Optional[str] = ..., from_sequence: _Optional[int] = ..., signal_caught_up: _Optional[bool] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("entry", "merkle_root", "caught_up")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    entry: Entry
    merkle_root: bytes
    caught_up: bool
    def __init__(self, entry: _Optional[_Union[Entry, _Mapping]] = ..., merkle_root: _Optional[bytes] = ..., caught_up: _Optional[bool] = ...) -> None: ...

class RootRequest(_message.Message):
    __slots__ = ("context_id", "tree_size")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    tree_size: int
    def __init__(self, context_id: _Optional[str] = ..., tree_size: _Optional[int] = ...) -> None: ...

class RootResponse(_message.Message):
    __slots__ = ("tree_size", "merkle_root", "lamport_clock", "checkpoint")
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    LAMPORT_CLOCK_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    tree_size: int
    merkle_root: bytes
    lamport_clock: int
    checkpoint: bytes
    def __init__(self, tree_size: _Optional[int] = ..., merkle_root: _Optional[bytes] = ..., lamport_clock: _Optional[int] = ..., checkpoint: _Optional[bytes] = ...) -> None: ...

class InclusionRequest(_message.Message):
    __slots__ = ("context_id", "sequence", "tree_size")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    sequence: int
    tree_size: int
    def __init__(self, context_id: _Optional[str] = ..., sequence: _Optional[int] = ..., tree_size: _Optional[int] = ...) -> None: ...

class InclusionResponse(_message.Message):
    __slots__ = ("tree_size", "merkle_root", "audit_path", "entry")
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    AUDIT_PATH_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    tree_size: int
    merkle_root: bytes
    audit_path: _containers.RepeatedScalarFieldContainer[bytes]
    entry: Entry
    def __init__(self, tree_size: _Optional[int] = ..., merkle_root: _Optional[bytes] = ..., audit_path: _Optional[_Iterable[bytes]] = ..., entry: _Optional[_Union[Entry, _Mapping]] = ...) -> None: ...

class ConsistencyRequest(_message.Message):
    __slots__ = ("context_id", "first_size", "second_size")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SIZE_FIELD_NUMBER: _ClassVar[int]
    SECOND_SIZE_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    first_size: int
    second_size: int
    def __init__(self, context_id: _Optional[str] = ..., first_size: _Optional[int] = ..., second_size: _Optional[int] = ...) -> None: ...

class ConsistencyResponse(_message.Message):
    __slots__ = ("first_root", "second_root", "proof", "second_size")
    FIRST_ROOT_FIELD_NUMBER: _ClassVar[int]
    SECOND_ROOT_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    SECOND_SIZE_FIELD_NUMBER: _ClassVar[int]
    first_root: bytes
    second_root: bytes
    proof: _containers.RepeatedScalarFieldContainer[bytes]
    second_size: int
    def __init__(self, first_root: _Optional[bytes] = ..., second_root: _Optional[bytes] = ..., proof: _Optional[_Iterable[bytes]] = ..., second_size: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("context_id", "after_context_id", "limit")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    after_context_id: str
    limit: int
    def __init__(self, context_id: _Optional[str] = ..., after_context_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("node_name", "clustered", "replication_acks", "durability", "members", "contexts", "next_after_context_id", "quarantined_entries", "quarantine", "replication", "raft_groups")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    CLUSTERED_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_ACKS_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    RAFT_GROUPS_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    clustered: bool
    replication_acks: str
    durability: str
    members: _containers.RepeatedCompositeFieldContainer[MemberStatus]
    contexts: _containers.RepeatedCompositeFieldContainer[ContextStatus]
    next_after_context_id: str
    quarantined_entries: int
    quarantine: _containers.RepeatedCompositeFieldContainer[QuarantinedEntry]
    replication: str
    raft_groups: _containers.RepeatedCompositeFieldContainer[RaftGroupStatus]
    def __init__(self, node_name: _Optional[str] = ..., clustered: _Optional[bool] = ..., replication_acks: _Optional[str] = ..., durability: _Optional[str] = ..., members: _Optional[_Iterable[_Union[MemberStatus, _Mapping]]] = ..., contexts: _Optional[_Iterable[_Union[ContextStatus, _Mapping]]] = ..., next_after_context_id: _Optional[str] = ..., quarantined_entries: _Optional[int] = ..., quarantine: _Optional[_Iterable[_Union[QuarantinedEntry, _Mapping]]] = ..., replication: _Optional[str] = ..., raft_groups: _Optional[_Iterable[_Union[RaftGroupStatus, _Mapping]]] = ...) -> None: ...

class RaftGroupStatus(_message.Message):
    __slots__ = ("group", "role", "term", "leader", "commit_index", "applied_index", "last_index", "voters", "learners", "followers", "forming")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    FOLLOWERS_FIELD_NUMBER: _ClassVar[int]
    FORMING_FIELD_NUMBER: _ClassVar[int]
    group: int
    role: str
    term: int
    leader: str
    commit_index: int
    applied_index: int
    last_index: int
    voters: _containers.RepeatedScalarFieldContainer[str]
    learners: _containers.RepeatedScalarFieldContainer[str]
    followers: _containers.RepeatedCompositeFieldContainer[RaftFollowerProgress]
    forming: str
    def __init__(self, group: _Optional[int] = ..., role: _Optional[str] = ..., term: _Optional[int] = ..., leader: _Optional[str] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., last_index: _Optional[int] = ..., voters: _Optional[_Iterable[str]] = ..., learners: _Optional[_Iterable[str]] = ..., followers: _Optional[_Iterable[_Union[RaftFollowerProgress, _Mapping]]] = ..., forming: _Optional[str] = ...) -> None: ...

class RaftFollowerProgress(_message.Message):
    __slots__ = ("node", "match_index", "lag")
    NODE_FIELD_NUMBER: _ClassVar[int]
    MATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    node: str
    match_index: int
    lag: int
    def __init__(self, node: _Optional[str] = ..., match_index: _Optional[int] = ..., lag: _Optional[int] = ...) -> None: ...

class MemberStatus(_message.Message):
    __slots__ = ("name", "address", "state", "since_unix_ms", "last_heard_unix_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARD_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    state: str
    since_unix_ms: int
    last_heard_unix_ms: int
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., state: _Optional[str] = ..., since_unix_ms: _Optional[int] = ..., last_heard_unix_ms: _Optional[int] = ...) -> None: ...

class ContextStatus(_message.Message):
    __slots__ = ("context_id", "owner", "epoch", "latest_sequence", "replicas")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LATEST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    owner: str
    epoch: int
    latest_sequence: int
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    def __init__(self, context_id: _Optional[str] = ..., owner: _Optional[str] = ..., epoch: _Optional[int] = ..., latest_sequence: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ...) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("node", "applied_sequence", "lag")
    NODE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    node: str
    applied_sequence: int
    lag: int
    def __init__(self, node: _Optional[str] = ..., applied_sequence: _Optional[int] = ..., lag: _Optional[int] = ...) -> None: ...

class QuarantinedEntry(_message.Message):
    __slots__ = ("context_id", "sequence", "epoch", "content_hash", "quarantined_at_unix_ms", "reason")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    sequence: int
    epoch: int
    content_hash: bytes
    quarantined_at_unix_ms: int
    reason: str
    def __init__(self, context_id: _Optional[str] = ..., sequence: _Optional[int] = ..., epoch: _Optional[int] = ..., content_hash: _Optional[bytes] = ..., quarantined_at_unix_ms: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...
