"""`MessagingEndpoint`: RocketMQ 5's `apache.rocketmq.v2.MessagingService` on one replica's `MessageStore`.

Every replica serves the whole service. Reads (QueryRoute, QueryAssignment, offsets, PullMessage) are
answered from this replica's applied state, which never runs ahead of the commit index. Writes (SendMessage,
ReceiveMessage = pop, AckMessage, ChangeInvisibleDuration, EndTransaction, ForwardMessageToDeadLetterQueue,
UpdateOffset) run here when this replica is master; otherwise they are forwarded once to the leader's
endpoint (`LeaderLink`). While no leader is known, a write waits up to `WRITE_WAIT_S` (bounded by the
client's deadline) and then answers HA_NOT_AVAILABLE, which the official clients retry.

Invariants: every RPC answers a `Status` before the client's deadline, never hangs; SendMessage says OK only
for a message committed on a quorum (`PutStatus.PUT_OK`); a receipt handle is the store's
(`topic:queue:offset:seq`), valid on any replica that becomes master. The group appears as one broker
(`brokerName`, id 0) whose endpoints are the client's own access point (as RocketMQ's proxy answers), or
all replicas' endpoints when the client sent none: a client configured with every replica
(`host:p0;host:p1;host:p2`) gets one channel that fails over between them; a client configured with one
replica (the Node.js client takes a single address) stays on it, and that replica forwards its writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf import timestamp_pb2
from rocketmq.grpc_protocol import definition_pb2 as d  # type: ignore[import-untyped]
from rocketmq.grpc_protocol import service_pb2 as s
from rocketmq.grpc_protocol import service_pb2_grpc as sg

from dledger.broker_adapter.codes import Code, ack_code, put_code
from dledger.broker_adapter.endpoint_config import EndpointConfig
from dledger.broker_adapter.endpoint_convert import ConvertError, from_proto, store_name
from dledger.broker_adapter.endpoint_support import (
    FORWARDED,
    ApplyNotifier,
    LeaderLink,
    check_signature,
    client_metadata,
)
from dledger.broker_adapter.endpoint_telemetry import Telemetry
from dledger.broker_adapter.endpoint_topics import ACCEPTS, permission, recall_handle, recall_message, type_conflict
from dledger.broker_adapter.message import MessageType
from dledger.broker_adapter.results import NAME, AckStatus, PutStatus
from dledger.broker_adapter.store import MessageStore

__all__ = ["FORWARDED_WAIT_S", "WRITE_WAIT_S", "MessagingEndpoint"]

log = logging.getLogger(__name__)
R = TypeVar("R")

WRITE_WAIT_S = 3.0  # how long a write waits for a leader (within the client's deadline)
FORWARDED_WAIT_S = 1.0  # how long a forwarded write waits for this replica to become master
MAX_INVISIBLE_MS = 12 * 3600 * 1000


def _status(code: int, message: str = "") -> Any:
    return d.Status(code=code, message=message or d.Code.Name(code))


def _ms(duration: Any) -> int:
    return int(duration.seconds) * 1000 + int(duration.nanos) // 1_000_000


class _NotMaster(Exception):
    """This replica cannot do the write now; the caller may forward it or wait."""


class MessagingEndpoint(sg.MessagingServiceServicer):  # type: ignore[misc]
    def __init__(self, store: MessageStore, config: EndpointConfig, notifier: ApplyNotifier) -> None:
        self.store = store
        self.config = config
        self.notifier = notifier
        self.link = LeaderLink(config.endpoints, config.self_id)
        self.telemetry = Telemetry(self)
        self.route_endpoints = _endpoints(config.endpoints.values(), config.address)

    # ---- plumbing ----
    def _denied(self, context: Any) -> Any | None:
        """A status when the request fails authentication (or has no client id), else None."""
        md = client_metadata(context.invocation_metadata() or ())
        if self.config.access_key:
            why = check_signature(md, self.config.access_key, self.config.secret_key)
            if why:
                return _status(Code.UNAUTHORIZED, why)
        return None

    @staticmethod
    def _forwarded(context: Any) -> bool:
        return FORWARDED in client_metadata(context.invocation_metadata() or ())

    def _deadline(self, context: Any) -> float:
        remaining = context.time_remaining()
        return time.monotonic() + (remaining - 0.2 if remaining is not None else 30.0)

    async def _write(
        self,
        context: Any,
        local: Callable[[], Awaitable[R]],
        forward: Callable[[Any, list[tuple[str, str]], float], Awaitable[R]],
        fail: Callable[[int, str], R],
    ) -> R:
        """Run `local` on the master, or forward to the leader, waiting for one within bounds.

        A forwarded request that reaches a replica which is not master fails fast when that replica knows
        another leader (the forwarder then tries the new leader), and otherwise waits at most
        `FORWARDED_WAIT_S` for itself to become master, so the forwarder keeps time for another try.

        A request is forwarded only over a connected channel, and at most once with an unknown fate: when a
        forward fails after it was sent (the leader died or stalled mid-call), the entry may be committed,
        so the answer is SLAVE_PERSISTENCE_TIMEOUT (outcome unknown), never HA_NOT_AVAILABLE ("nothing was
        written"), and the request is not forwarded again (that stored one send twice; jepsen_like found it)."""
        deadline = self._deadline(context)
        forwarded = self._forwarded(context)
        give_up = min(deadline, time.monotonic() + (FORWARDED_WAIT_S if forwarded else WRITE_WAIT_S))
        why = "no leader is known"
        while True:
            leader = self.store.server.leader_id if self.store.server else None
            if self.store.is_master:
                try:
                    return await local()
                except _NotMaster as exc:
                    why = str(exc)
            elif forwarded:
                why = "forwarded here, but this replica is not the master"
                if leader and leader != self.config.self_id:
                    return fail(Code.HA_NOT_AVAILABLE, f"{why}; the leader is {leader}")
            elif leader and leader != self.config.self_id:
                if not await self.link.connected(leader, min(0.5, max(give_up - time.monotonic(), 0.0))):
                    why = f"the leader {leader} is not reachable from here"  # nothing was sent
                else:
                    try:
                        md = LeaderLink.metadata(context.invocation_metadata() or ())
                        out = await forward(self.link.stub(leader), md, max(deadline - time.monotonic(), 0.1))
                    except grpc.aio.AioRpcError as exc:
                        return fail(
                            Code.SLAVE_PERSISTENCE_TIMEOUT,
                            f"forwarding to the leader {leader} failed after sending ({exc.code().name}): "
                            "the outcome is unknown",
                        )
                    if _code(out) != Code.HA_NOT_AVAILABLE or time.monotonic() >= give_up:
                        return out
                    why = f"the leader {leader} was not master"  # it said so: nothing was written
            if time.monotonic() >= give_up:
                return fail(Code.HA_NOT_AVAILABLE, why)
            await asyncio.sleep(0.02)

    # ---- routes and sessions ----
    async def QueryRoute(self, request: Any, context: Any) -> Any:
        if (denied := self._denied(context)) is not None:
            return s.QueryRouteResponse(status=denied)
        if not request.topic.name or not NAME.match(store_name(request.topic)):
            return s.QueryRouteResponse(status=_status(Code.ILLEGAL_TOPIC, f"illegal topic {request.topic.name!r}"))
        queues = self._queues(request.topic, None, request.endpoints)
        if queues is None:
            return s.QueryRouteResponse(status=_status(Code.TOPIC_NOT_FOUND, f"topic {request.topic.name!r}"))
        return s.QueryRouteResponse(status=_status(Code.OK), message_queues=queues)

    def _queues(self, topic: Any, queue_id: int | None, access_point: Any) -> list[Any] | None:
        """The topic's queues on the one broker; its endpoints are the client's access point (what it used
        to reach us, like RocketMQ's proxy), or every replica's endpoint when the client sent none."""
        cfg = self.store.topic(store_name(topic))
        opts = self.store.options
        if cfg is None and not opts.auto_create_topic:
            return None
        count = cfg.queue_count if cfg else opts.default_queue_count
        types = ACCEPTS[cfg.message_type] if cfg else ACCEPTS[MessageType.MIXED]
        endpoints = access_point if access_point.addresses else self.route_endpoints
        broker = d.Broker(name=self.config.broker_name, id=0, endpoints=endpoints)
        ids = range(count) if queue_id is None else [queue_id]
        return [
            d.MessageQueue(topic=topic, id=q, permission=permission(cfg), broker=broker, accept_message_types=types)
            for q in ids
        ]

    async def QueryAssignment(self, request: Any, context: Any) -> Any:
        if (denied := self._denied(context)) is not None:
            return s.QueryAssignmentResponse(status=denied)
        if not request.group.name or not NAME.match(store_name(request.group)):
            return s.QueryAssignmentResponse(status=_status(Code.ILLEGAL_CONSUMER_GROUP, "illegal consumer group"))
        queues = self._queues(request.topic, -1, request.endpoints)  # the whole broker: pop takes from every queue
        if queues is None:
            return s.QueryAssignmentResponse(status=_status(Code.TOPIC_NOT_FOUND, f"topic {request.topic.name!r}"))
        assignments = [d.Assignment(message_queue=q) for q in queues]
        return s.QueryAssignmentResponse(status=_status(Code.OK), assignments=assignments)

    async def Heartbeat(self, request: Any, context: Any) -> Any:
        if (denied := self._denied(context)) is not None:
            return s.HeartbeatResponse(status=denied)
        if "x-mq-client-id" not in client_metadata(context.invocation_metadata() or ()):
            return s.HeartbeatResponse(status=_status(Code.CLIENT_ID_REQUIRED, "no x-mq-client-id header"))
        if request.client_type == d.ClientType.CLIENT_TYPE_UNSPECIFIED:
            return s.HeartbeatResponse(status=_status(Code.UNRECOGNIZED_CLIENT_TYPE, "no client type"))
        return s.HeartbeatResponse(status=_status(Code.OK))

    async def NotifyClientTermination(self, request: Any, context: Any) -> Any:
        if (denied := self._denied(context)) is not None:
            return s.NotifyClientTerminationResponse(status=denied)
        return s.NotifyClientTerminationResponse(status=_status(Code.OK))

    async def Telemetry(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        async for command in self.telemetry.serve(request_iterator, context, self._denied(context)):
            yield command

    # ---- send ----
    async def SendMessage(self, request: Any, context: Any) -> Any:
        if (denied := self._denied(context)) is not None:
            return s.SendMessageResponse(status=denied)
        if not request.messages:
            return s.SendMessageResponse(status=_status(Code.BAD_REQUEST, "no messages"))
        try:
            now, limit = self.store.options.clock(), self.store.options.max_message_bytes
            batch = [from_proto(m, max_body=limit, now_ms=now) for m in request.messages]
        except ConvertError as exc:
            return s.SendMessageResponse(status=_status(exc.code, str(exc)))
        if (why := type_conflict(self.store, batch)) is not None:
            return s.SendMessageResponse(status=_status(Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, why))

        async def local() -> Any:
            result = await self.store.put_messages(batch)
            if result.status in (PutStatus.NOT_LEADER, PutStatus.SERVICE_NOT_AVAILABLE):
                raise _NotMaster(result.reason)
            if not result.ok:
                return s.SendMessageResponse(status=_status(put_code(result.status, result.reason), result.reason))
            entries = [
                s.SendResultEntry(
                    status=_status(Code.OK),
                    message_id=mid,
                    transaction_id=mid if msg.transaction else "",
                    offset=off,
                    recall_handle=recall_handle(msg, mid, now),
                )
                for mid, off, msg in zip(result.msg_ids, result.queue_offsets, batch, strict=False)
            ]
            return s.SendMessageResponse(status=_status(Code.OK), entries=entries)

        def fail(code: int, why: str) -> Any:
            return s.SendMessageResponse(status=_status(code, why))

        return await self._write(
            context, local, lambda st, md, t: st.SendMessage(request, metadata=md, timeout=t), fail
        )

    async def EndTransaction(self, request: Any, context: Any) -> Any:
        if (denied := self._denied(context)) is not None:
            return s.EndTransactionResponse(status=denied)
        tid = request.transaction_id or request.message_id
        if not tid:
            return s.EndTransactionResponse(status=_status(Code.INVALID_TRANSACTION_ID, "no transaction id"))
        if request.resolution == d.TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED:
            return s.EndTransactionResponse(status=_status(Code.OK, "left prepared (resolution unknown)"))
        commit = request.resolution == d.TransactionResolution.COMMIT

        async def local() -> Any:
            from dledger.broker_adapter.results import StoreError

            try:
                found = await self.store.end_transaction(tid, commit)
            except StoreError as exc:
                if exc.status in (PutStatus.NOT_LEADER, PutStatus.SERVICE_NOT_AVAILABLE):
                    raise _NotMaster(exc.reason) from None
                return s.EndTransactionResponse(status=_status(put_code(exc.status), exc.reason))
            if found or await self.store.query_by_id(tid) is not None:
                return s.EndTransactionResponse(status=_status(Code.OK))
            return s.EndTransactionResponse(status=_status(Code.INVALID_TRANSACTION_ID, f"no transaction {tid!r}"))

        def fail(code: int, why: str) -> Any:
            return s.EndTransactionResponse(status=_status(code, why))

        return await self._write(
            context, local, lambda st, md, t: st.EndTransaction(request, metadata=md, timeout=t), fail
        )

    # ---- pop consumption ----
    async def ReceiveMessage(self, request: Any, context: Any) -> AsyncIterator[Any]:
        from dledger.broker_adapter.endpoint_receive import receive

        for response in await receive(self, request, context):
            yield response

    async def AckMessage(self, request: Any, context: Any) -> Any:
        if (denied := self._denied(context)) is not None:
            return s.AckMessageResponse(status=denied)
        group = store_name(request.group)
        if not request.group.name or not NAME.match(group):
            return s.AckMessageResponse(status=_status(Code.ILLEGAL_CONSUMER_GROUP, "illegal consumer group"))
        if not request.entries:
            return s.AckMessageResponse(status=_status(Code.BAD_REQUEST, "no entries"))

        async def local() -> Any:
            results = await self.store.ack_messages(group, [e.receipt_handle for e in request.entries])
            if any(r.status in (AckStatus.NOT_LEADER, AckStatus.SERVICE_NOT_AVAILABLE) for r in results):
                raise _NotMaster(results[0].reason)
            entries = [
                s.AckMessageResultEntry(
                    message_id=e.message_id, receipt_handle=e.receipt_handle, status=_status(ack_code(r.status))
                )
                for e, r in zip(request.entries, results, strict=True)
            ]
            codes = {e.status.code for e in entries}
            top = entries[0].status.code if len(codes) == 1 else Code.MULTIPLE_RESULTS
            return s.AckMessageResponse(status=_status(top), entries=entries)

        def fail(code: int, why: str) -> Any:
            return s.AckMessageResponse(status=_status(code, why))

        return await self._write(context, local, lambda st, md, t: st.AckMessage(request, metadata=md, timeout=t), fail)

    async def ChangeInvisibleDuration(self, request: Any, context: Any) -> Any:
        if (denied := self._denied(context)) is not None:
            return s.ChangeInvisibleDurationResponse(status=denied)
        group = store_name(request.group)
        if not request.group.name or not NAME.match(group):
            why = "illegal consumer group"
            return s.ChangeInvisibleDurationResponse(status=_status(Code.ILLEGAL_CONSUMER_GROUP, why))
        invisible = _ms(request.invisible_duration)
        if not 0 <= invisible <= MAX_INVISIBLE_MS:
            why = f"invisible duration {invisible} ms is not in [0, 12 h]"
            return s.ChangeInvisibleDurationResponse(status=_status(Code.ILLEGAL_INVISIBLE_TIME, why))

        async def local() -> Any:
            r = await self.store.change_invisible_duration(group, request.receipt_handle, invisible)
            if r.status in (AckStatus.NOT_LEADER, AckStatus.SERVICE_NOT_AVAILABLE):
                raise _NotMaster(r.reason)
            return s.ChangeInvisibleDurationResponse(
                status=_status(ack_code(r.status)), receipt_handle=r.receipt_handle
            )

        def fail(code: int, why: str) -> Any:
            return s.ChangeInvisibleDurationResponse(status=_status(code, why))

        return await self._write(
            context, local, lambda st, md, t: st.ChangeInvisibleDuration(request, metadata=md, timeout=t), fail
        )

    async def ForwardMessageToDeadLetterQueue(self, request: Any, context: Any) -> Any:
        from dledger.broker_adapter.endpoint_offsets import forward_to_dlq

        return await forward_to_dlq(self, request, context)

    # ---- offsets and pull (endpoint_offsets) ----
    async def QueryOffset(self, request: Any, context: Any) -> Any:
        from dledger.broker_adapter.endpoint_offsets import query_offset

        return await query_offset(self, request, context)

    async def GetOffset(self, request: Any, context: Any) -> Any:
        from dledger.broker_adapter.endpoint_offsets import get_offset

        return await get_offset(self, request, context)

    async def UpdateOffset(self, request: Any, context: Any) -> Any:
        from dledger.broker_adapter.endpoint_offsets import update_offset

        return await update_offset(self, request, context)

    async def PullMessage(self, request: Any, context: Any) -> AsyncIterator[Any]:
        from dledger.broker_adapter.endpoint_offsets import pull_message

        for response in await pull_message(self, request, context):
            yield response

    async def RecallMessage(self, request: Any, context: Any) -> Any:
        return await recall_message(self, request, context, _NotMaster)

    # ---- not supported ----

    async def SyncLiteSubscription(self, request: Any, context: Any) -> Any:
        return s.SyncLiteSubscriptionResponse(status=_status(Code.UNSUPPORTED, "lite topics are not supported"))

    async def close(self) -> None:
        await self.telemetry.close()
        await self.link.close()


def _code(response: Any) -> int:
    """The status code of a unary response, or of the first message of a streamed one (a list)."""
    if isinstance(response, list):
        return int(response[0].status.code) if response and response[0].HasField("status") else int(Code.OK)
    return int(response.status.code)


def _now_ts() -> Any:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def _endpoints(addresses: Any, own: str) -> Any:
    """One `Endpoints` with every replica (IPv4 / IPv6), so the client's channel fails over between them."""
    import ipaddress

    eps = d.Endpoints()
    hosts = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        hosts.append(host)
        eps.addresses.add(host=host, port=int(port))
    try:
        versions = {ipaddress.ip_address(h).version for h in hosts}
    except ValueError:
        versions = set()
    if versions == {4}:
        eps.scheme = d.AddressScheme.IPv4
    elif versions == {6}:
        eps.scheme = d.AddressScheme.IPv6
    else:  # a DNS name: the clients take one address only, so this replica's
        host, _, port = own.rpartition(":")
        eps = d.Endpoints(scheme=d.AddressScheme.DOMAIN_NAME)
        eps.addresses.add(host=host.strip("[]"), port=int(port))
    return eps
