"""Store results -> RocketMQ 5 `apache.rocketmq.v2.Code` values (the endpoint's status vocabulary).

Invariant: a status that means "nothing was written, try again" (no leader, a leader not yet master, a
replication timeout whose outcome is unknown) maps to a code the official clients retry (HA_NOT_AVAILABLE,
SLAVE_PERSISTENCE_TIMEOUT); a status that no retry can fix (an illegal message, a missing topic) maps to a
4xx code the clients surface at once. TOO_MANY_REQUESTS is kept for "busy" only, since the producers stop
retrying on it.
"""

from __future__ import annotations

from rocketmq.grpc_protocol import definition_pb2 as d  # type: ignore[import-untyped]

from dledger.broker_adapter.results import AckStatus, PopStatus, PutStatus

__all__ = ["Code", "ack_code", "pop_code", "put_code"]

Code = d.Code

_PUT = {
    PutStatus.PUT_OK: Code.OK,
    PutStatus.NOT_LEADER: Code.HA_NOT_AVAILABLE,
    PutStatus.SERVICE_NOT_AVAILABLE: Code.HA_NOT_AVAILABLE,
    PutStatus.FLUSH_OR_REPLICA_TIMEOUT: Code.SLAVE_PERSISTENCE_TIMEOUT,
    PutStatus.MESSAGE_ILLEGAL: Code.BAD_REQUEST,
    PutStatus.TOPIC_NOT_FOUND: Code.TOPIC_NOT_FOUND,
    PutStatus.DISK_FULL: Code.INTERNAL_SERVER_ERROR,
    PutStatus.NO_PERMISSION: Code.FORBIDDEN,
    PutStatus.NOT_FOUND: Code.NOT_FOUND,
}

_POP = {
    PopStatus.FOUND: Code.OK,
    PopStatus.NO_NEW_MSG: Code.MESSAGE_NOT_FOUND,
    PopStatus.NOT_LEADER: Code.HA_NOT_AVAILABLE,
    PopStatus.SERVICE_NOT_AVAILABLE: Code.HA_NOT_AVAILABLE,
    PopStatus.TOPIC_NOT_FOUND: Code.TOPIC_NOT_FOUND,
    PopStatus.ILLEGAL: Code.BAD_REQUEST,
    PopStatus.NO_PERMISSION: Code.FORBIDDEN,
}

_ACK = {
    AckStatus.OK: Code.OK,
    AckStatus.INVALID_HANDLE: Code.INVALID_RECEIPT_HANDLE,
    AckStatus.NOT_LEADER: Code.HA_NOT_AVAILABLE,
    AckStatus.SERVICE_NOT_AVAILABLE: Code.HA_NOT_AVAILABLE,
}

#: codes after which a follower may try again on the (new) leader: nothing was written
RETRY_ELSEWHERE = frozenset({Code.HA_NOT_AVAILABLE})


def put_code(status: PutStatus, reason: str = "") -> int:
    if status is PutStatus.MESSAGE_ILLEGAL:
        if "body is empty" in reason:
            return int(Code.MESSAGE_BODY_EMPTY)
        if "maxMessageSize" in reason or "limit is" in reason:
            return int(Code.MESSAGE_BODY_TOO_LARGE)
        if "topic" in reason and "must be" in reason:
            return int(Code.ILLEGAL_TOPIC)
    return int(_PUT[status])


def pop_code(status: PopStatus) -> int:
    return int(_POP[status])


def ack_code(status: AckStatus) -> int:
    return int(_ACK[status])
