from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_KIND_NORMAL: _ClassVar[EntryKind]
    ENTRY_KIND_NOOP: _ClassVar[EntryKind]
    ENTRY_KIND_CONFIG: _ClassVar[EntryKind]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_OK: _ClassVar[Status]
    STATUS_NOT_LEADER: _ClassVar[Status]
    STATUS_BUSY: _ClassVar[Status]
    STATUS_INVALID: _ClassVar[Status]
    STATUS_NOT_FOUND: _ClassVar[Status]
    STATUS_COMPACTED: _ClassVar[Status]
    STATUS_UNAVAILABLE: _ClassVar[Status]
    STATUS_STORAGE_ERROR: _ClassVar[Status]
    STATUS_WRONG_GROUP: _ClassVar[Status]

class MemberOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMBER_OP_ADD_LEARNER: _ClassVar[MemberOp]
    MEMBER_OP_PROMOTE: _ClassVar[MemberOp]
    MEMBER_OP_REMOVE: _ClassVar[MemberOp]
ENTRY_KIND_NORMAL: EntryKind
ENTRY_KIND_NOOP: EntryKind
ENTRY_KIND_CONFIG: EntryKind
STATUS_OK: Status
STATUS_NOT_LEADER: Status
STATUS_BUSY: Status
STATUS_INVALID: Status
STATUS_NOT_FOUND: Status
STATUS_COMPACTED: Status
STATUS_UNAVAILABLE: Status
STATUS_STORAGE_ERROR: Status
STATUS_WRONG_GROUP: Status
MEMBER_OP_ADD_LEARNER: MemberOp
MEMBER_OP_PROMOTE: MemberOp
MEMBER_OP_REMOVE: MemberOp

class Entry(_message.Message):
    __slots__ = ("index", "term", "kind", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    kind: EntryKind
    data: bytes
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., kind: _Optional[_Union[EntryKind, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class RequestVote(_message.Message):
    __slots__ = ("term", "last_log_index", "last_log_term", "pre_vote", "transfer")
    TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    term: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool
    transfer: bool
    def __init__(self, term: _Optional[int] = ..., last_log_index: _Optional[int] = ..., last_log_term: _Optional[int] = ..., pre_vote: _Optional[bool] = ..., transfer: _Optional[bool] = ...) -> None: ...

class RequestVoteResponse(_message.Message):
    __slots__ = ("term", "vote_granted", "pre_vote")
    TERM_FIELD_NUMBER: _ClassVar[int]
    VOTE_GRANTED_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    term: int
    vote_granted: bool
    pre_vote: bool
    def __init__(self, term: _Optional[int] = ..., vote_granted: _Optional[bool] = ..., pre_vote: _Optional[bool] = ...) -> None: ...

class AppendEntries(_message.Message):
    __slots__ = ("term", "prev_log_index", "prev_log_term", "leader_commit", "read_context", "entry_heads", "entry_data")
    TERM_FIELD_NUMBER: _ClassVar[int]
    PREV_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREV_LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_COMMIT_FIELD_NUMBER: _ClassVar[int]
    READ_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ENTRY_HEADS_FIELD_NUMBER: _ClassVar[int]
    ENTRY_DATA_FIELD_NUMBER: _ClassVar[int]
    term: int
    prev_log_index: int
    prev_log_term: int
    leader_commit: int
    read_context: bytes
    entry_heads: bytes
    entry_data: bytes
    def __init__(self, term: _Optional[int] = ..., prev_log_index: _Optional[int] = ..., prev_log_term: _Optional[int] = ..., leader_commit: _Optional[int] = ..., read_context: _Optional[bytes] = ..., entry_heads: _Optional[bytes] = ..., entry_data: _Optional[bytes] = ...) -> None: ...

class AppendEntriesResponse(_message.Message):
    __slots__ = ("term", "success", "match_index", "conflict_index", "conflict_term", "last_log_index", "read_context", "reject_index")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_INDEX_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    READ_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    REJECT_INDEX_FIELD_NUMBER: _ClassVar[int]
    term: int
    success: bool
    match_index: int
    conflict_index: int
    conflict_term: int
    last_log_index: int
    read_context: bytes
    reject_index: int
    def __init__(self, term: _Optional[int] = ..., success: _Optional[bool] = ..., match_index: _Optional[int] = ..., conflict_index: _Optional[int] = ..., conflict_term: _Optional[int] = ..., last_log_index: _Optional[int] = ..., read_context: _Optional[bytes] = ..., reject_index: _Optional[int] = ...) -> None: ...

class InstallSnapshot(_message.Message):
    __slots__ = ("term", "last_included_index", "last_included_term", "config")
    TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_INCLUDED_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_INCLUDED_TERM_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    term: int
    last_included_index: int
    last_included_term: int
    config: bytes
    def __init__(self, term: _Optional[int] = ..., last_included_index: _Optional[int] = ..., last_included_term: _Optional[int] = ..., config: _Optional[bytes] = ...) -> None: ...

class InstallSnapshotResponse(_message.Message):
    __slots__ = ("term", "success", "last_index")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    term: int
    success: bool
    last_index: int
    def __init__(self, term: _Optional[int] = ..., success: _Optional[bool] = ..., last_index: _Optional[int] = ...) -> None: ...

class TimeoutNow(_message.Message):
    __slots__ = ("term",)
    TERM_FIELD_NUMBER: _ClassVar[int]
    term: int
    def __init__(self, term: _Optional[int] = ...) -> None: ...

class PeerMessage(_message.Message):
    __slots__ = ("group", "from_id", "to_id", "request_vote", "request_vote_response", "append_entries", "append_entries_response", "install_snapshot", "install_snapshot_response", "timeout_now")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    TO_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_VOTE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_VOTE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    APPEND_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    APPEND_ENTRIES_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    INSTALL_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    INSTALL_SNAPSHOT_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_NOW_FIELD_NUMBER: _ClassVar[int]
    group: str
    from_id: str
    to_id: str
    request_vote: RequestVote
    request_vote_response: RequestVoteResponse
    append_entries: AppendEntries
    append_entries_response: AppendEntriesResponse
    install_snapshot: InstallSnapshot
    install_snapshot_response: InstallSnapshotResponse
    timeout_now: TimeoutNow
    def __init__(self, group: _Optional[str] = ..., from_id: _Optional[str] = ..., to_id: _Optional[str] = ..., request_vote: _Optional[_Union[RequestVote, _Mapping]] = ..., request_vote_response: _Optional[_Union[RequestVoteResponse, _Mapping]] = ..., append_entries: _Optional[_Union[AppendEntries, _Mapping]] = ..., append_entries_response: _Optional[_Union[AppendEntriesResponse, _Mapping]] = ..., install_snapshot: _Optional[_Union[InstallSnapshot, _Mapping]] = ..., install_snapshot_response: _Optional[_Union[InstallSnapshotResponse, _Mapping]] = ..., timeout_now: _Optional[_Union[TimeoutNow, _Mapping]] = ...) -> None: ...

class PeerBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[PeerMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[PeerMessage, _Mapping]]] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("group", "from_id", "to_id", "term", "last_included_index", "last_included_term", "config", "total_size", "offset", "data", "chunk_crc", "done", "file_crc")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    TO_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_INCLUDED_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_INCLUDED_TERM_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_CRC_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FILE_CRC_FIELD_NUMBER: _ClassVar[int]
    group: str
    from_id: str
    to_id: str
    term: int
    last_included_index: int
    last_included_term: int
    config: bytes
    total_size: int
    offset: int
    data: bytes
    chunk_crc: int
    done: bool
    file_crc: int
    def __init__(self, group: _Optional[str] = ..., from_id: _Optional[str] = ..., to_id: _Optional[str] = ..., term: _Optional[int] = ..., last_included_index: _Optional[int] = ..., last_included_term: _Optional[int] = ..., config: _Optional[bytes] = ..., total_size: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., chunk_crc: _Optional[int] = ..., done: _Optional[bool] = ..., file_crc: _Optional[int] = ...) -> None: ...

class SnapshotAck(_message.Message):
    __slots__ = ("ok", "next_offset", "error")
    OK_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    next_offset: int
    error: str
    def __init__(self, ok: _Optional[bool] = ..., next_offset: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class PeerAck(_message.Message):
    __slots__ = ("group", "node_id")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    group: str
    node_id: str
    def __init__(self, group: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class AppendRequest(_message.Message):
    __slots__ = ("group", "data", "request_id")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    group: str
    data: _containers.RepeatedScalarFieldContainer[bytes]
    request_id: int
    def __init__(self, group: _Optional[str] = ..., data: _Optional[_Iterable[bytes]] = ..., request_id: _Optional[int] = ...) -> None: ...

class AppendResponse(_message.Message):
    __slots__ = ("status", "message", "leader_id", "leader_address", "first_index", "term", "request_id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FIRST_INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    status: Status
    message: str
    leader_id: str
    leader_address: str
    first_index: int
    term: int
    request_id: int
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., leader_id: _Optional[str] = ..., leader_address: _Optional[str] = ..., first_index: _Optional[int] = ..., term: _Optional[int] = ..., request_id: _Optional[int] = ...) -> None: ...

class AppendStreamRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[AppendRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[AppendRequest, _Mapping]]] = ...) -> None: ...

class AppendStreamResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[AppendResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[AppendResponse, _Mapping]]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("group", "index")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    group: str
    index: int
    def __init__(self, group: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("status", "message", "entry", "leader_id", "leader_address")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    status: Status
    message: str
    entry: Entry
    leader_id: str
    leader_address: str
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., entry: _Optional[_Union[Entry, _Mapping]] = ..., leader_id: _Optional[str] = ..., leader_address: _Optional[str] = ...) -> None: ...

class ReadIndexRequest(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: str
    def __init__(self, group: _Optional[str] = ...) -> None: ...

class ReadIndexResponse(_message.Message):
    __slots__ = ("status", "message", "read_index", "leader_id", "leader_address", "term")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    READ_INDEX_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    status: Status
    message: str
    read_index: int
    leader_id: str
    leader_address: str
    term: int
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., read_index: _Optional[int] = ..., leader_id: _Optional[str] = ..., leader_address: _Optional[str] = ..., term: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: str
    def __init__(self, group: _Optional[str] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("id", "address", "role", "term", "leader_id", "first_index", "last_index", "commit_index", "applied_index", "healthy", "error", "recovering_until")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RECOVERING_UNTIL_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    role: str
    term: int
    leader_id: str
    first_index: int
    last_index: int
    commit_index: int
    applied_index: int
    healthy: bool
    error: str
    recovering_until: int
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., role: _Optional[str] = ..., term: _Optional[int] = ..., leader_id: _Optional[str] = ..., first_index: _Optional[int] = ..., last_index: _Optional[int] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., healthy: _Optional[bool] = ..., error: _Optional[str] = ..., recovering_until: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("status", "node")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    status: Status
    node: NodeStatus
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., node: _Optional[_Union[NodeStatus, _Mapping]] = ...) -> None: ...

class TransferLeadershipRequest(_message.Message):
    __slots__ = ("group", "to_id")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TO_ID_FIELD_NUMBER: _ClassVar[int]
    group: str
    to_id: str
    def __init__(self, group: _Optional[str] = ..., to_id: _Optional[str] = ...) -> None: ...

class TransferLeadershipResponse(_message.Message):
    __slots__ = ("status", "message", "leader_id", "leader_address")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    status: Status
    message: str
    leader_id: str
    leader_address: str
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., leader_id: _Optional[str] = ..., leader_address: _Optional[str] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("id", "address", "voter")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VOTER_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    voter: bool
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., voter: _Optional[bool] = ...) -> None: ...

class ChangeMembershipRequest(_message.Message):
    __slots__ = ("group", "op", "node_id", "address")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    group: str
    op: MemberOp
    node_id: str
    address: str
    def __init__(self, group: _Optional[str] = ..., op: _Optional[_Union[MemberOp, str]] = ..., node_id: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class ChangeMembershipResponse(_message.Message):
    __slots__ = ("status", "message", "leader_id", "leader_address", "members", "index")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    status: Status
    message: str
    leader_id: str
    leader_address: str
    members: _containers.RepeatedCompositeFieldContainer[Member]
    index: int
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., leader_id: _Optional[str] = ..., leader_address: _Optional[str] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., index: _Optional[int] = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: str
    def __init__(self, group: _Optional[str] = ...) -> None: ...

class MembersResponse(_message.Message):
    __slots__ = ("status", "message", "leader_id", "leader_address", "members")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    status: Status
    message: str
    leader_id: str
    leader_address: str
    members: _containers.RepeatedCompositeFieldContainer[Member]
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., leader_id: _Optional[str] = ..., leader_address: _Optional[str] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ...) -> None: ...

class CompactRequest(_message.Message):
    __slots__ = ("group", "before_index")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    BEFORE_INDEX_FIELD_NUMBER: _ClassVar[int]
    group: str
    before_index: int
    def __init__(self, group: _Optional[str] = ..., before_index: _Optional[int] = ...) -> None: ...

class CompactResponse(_message.Message):
    __slots__ = ("status", "message", "first_index", "snapshot_index")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIRST_INDEX_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_INDEX_FIELD_NUMBER: _ClassVar[int]
    status: Status
    message: str
    first_index: int
    snapshot_index: int
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., first_index: _Optional[int] = ..., snapshot_index: _Optional[int] = ...) -> None: ...
