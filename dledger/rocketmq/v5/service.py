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

import logging
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from rocketmq.grpc_protocol import definition_pb2 as d  # type: ignore[import-untyped]
from rocketmq.grpc_protocol import service_pb2 as s
from rocketmq.grpc_protocol import service_pb2_grpc as sg

from dledger.broker_adapter.message import MessageType
from dledger.broker_adapter.results import NAME, AckStatus, PutStatus, StoreError
from dledger.broker_adapter.store import MessageStore
from dledger.rocketmq.v5.cluster import ClusterRoutes, endpoints_of
from dledger.rocketmq.v5.codes import Code, ack_code, put_code
from dledger.rocketmq.v5.config import EndpointConfig
from dledger.rocketmq.v5.context import MAX_INVISIBLE_MS, NotMaster, ServiceContext, ms, status
from dledger.rocketmq.v5.convert import ConvertError, from_proto, store_name
from dledger.rocketmq.v5.offsets import forward_to_dlq, get_offset, pull_message, query_offset, update_offset
from dledger.rocketmq.v5.receive import receive
from dledger.rocketmq.v5.support import ApplyNotifier, client_metadata
from dledger.rocketmq.v5.telemetry import Telemetry
from dledger.rocketmq.v5.topics import (
    ACCEPTS,
    permission,
    permission_of,
    recall_handle,
    recall_message,
    type_conflict,
)

__all__ = ["MessagingEndpoint"]

log = logging.getLogger(__name__)
R = TypeVar("R")


class MessagingEndpoint(sg.MessagingServiceServicer):  # type: ignore[misc]
    def __init__(self, store: MessageStore, config: EndpointConfig, notifier: ApplyNotifier) -> None:
        self.ctx = ServiceContext(store, config, notifier)
        self.store = store
        self.config = config
        self.notifier = notifier
        self.link = self.ctx.link
        self.route_endpoints = self.ctx.route_endpoints
        self.telemetry = Telemetry(self.ctx)
        self.cluster: ClusterRoutes | None = None  # the other groups, when the broker registers with NameServers

    # ---- routes and sessions ----
    async def QueryRoute(self, request: Any, context: Any) -> Any:
        if (denied := self.ctx.denied(context)) is not None:
            return s.QueryRouteResponse(status=denied)
        if not request.topic.name or not NAME.match(store_name(request.topic)):
            return s.QueryRouteResponse(status=status(Code.ILLEGAL_TOPIC, f"illegal topic {request.topic.name!r}"))
        queues = (self._queues(request.topic, None, request.endpoints) or []) + await self._others(request.topic, None)
        if not queues:
            return s.QueryRouteResponse(status=status(Code.TOPIC_NOT_FOUND, f"topic {request.topic.name!r}"))
        return s.QueryRouteResponse(status=status(Code.OK), message_queues=queues)

    async def _others(self, topic: Any, queue_id: int | None) -> list[Any]:
        """The topic's queues on the cluster's other groups (each with its own endpoints), when this broker
        registers with NameServers (`cluster`); `queue_id` -1: one entry per group, as `_queues` gives."""
        if self.cluster is None:
            return []
        out = []
        for g in await self.cluster.other_groups(store_name(topic)):
            broker = d.Broker(name=g.broker_name, id=0, endpoints=endpoints_of(g.endpoints))
            ids = range(g.queues) if queue_id is None else [queue_id]
            out += [
                d.MessageQueue(
                    topic=topic,
                    id=q,
                    permission=permission_of(g.perm),
                    broker=broker,
                    accept_message_types=ACCEPTS[MessageType.MIXED],
                )
                for q in ids
            ]
        return out

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
        if (denied := self.ctx.denied(context)) is not None:
            return s.QueryAssignmentResponse(status=denied)
        if not request.group.name or not NAME.match(store_name(request.group)):
            return s.QueryAssignmentResponse(status=status(Code.ILLEGAL_CONSUMER_GROUP, "illegal consumer group"))
        # the whole broker: pop takes from every queue (and so on every other group of the cluster)
        queues = (self._queues(request.topic, -1, request.endpoints) or []) + await self._others(request.topic, -1)
        if not queues:
            return s.QueryAssignmentResponse(status=status(Code.TOPIC_NOT_FOUND, f"topic {request.topic.name!r}"))
        assignments = [d.Assignment(message_queue=q) for q in queues]
        return s.QueryAssignmentResponse(status=status(Code.OK), assignments=assignments)

    async def Heartbeat(self, request: Any, context: Any) -> Any:
        if (denied := self.ctx.denied(context)) is not None:
            return s.HeartbeatResponse(status=denied)
        if "x-mq-client-id" not in client_metadata(context.invocation_metadata() or ()):
            return s.HeartbeatResponse(status=status(Code.CLIENT_ID_REQUIRED, "no x-mq-client-id header"))
        if request.client_type == d.ClientType.CLIENT_TYPE_UNSPECIFIED:
            return s.HeartbeatResponse(status=status(Code.UNRECOGNIZED_CLIENT_TYPE, "no client type"))
        return s.HeartbeatResponse(status=status(Code.OK))

    async def NotifyClientTermination(self, request: Any, context: Any) -> Any:
        if (denied := self.ctx.denied(context)) is not None:
            return s.NotifyClientTerminationResponse(status=denied)
        return s.NotifyClientTerminationResponse(status=status(Code.OK))

    async def Telemetry(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        async for command in self.telemetry.serve(request_iterator, context, self.ctx.denied(context)):
            yield command

    # ---- send ----
    async def SendMessage(self, request: Any, context: Any) -> Any:
        if (denied := self.ctx.denied(context)) is not None:
            return s.SendMessageResponse(status=denied)
        if not request.messages:
            return s.SendMessageResponse(status=status(Code.BAD_REQUEST, "no messages"))
        try:
            now, limit = self.store.options.clock(), self.store.options.max_message_bytes
            batch = [from_proto(m, max_body=limit, now_ms=now) for m in request.messages]
        except ConvertError as exc:
            return s.SendMessageResponse(status=status(exc.code, str(exc)))
        if (why := type_conflict(self.store, batch)) is not None:
            return s.SendMessageResponse(status=status(Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, why))

        async def local() -> Any:
            result = await self.store.put_messages(batch)
            if result.status in (PutStatus.NOT_LEADER, PutStatus.SERVICE_NOT_AVAILABLE):
                raise NotMaster(result.reason)
            if not result.ok:
                return s.SendMessageResponse(status=status(put_code(result.status, result.reason), result.reason))
            entries = [
                s.SendResultEntry(
                    status=status(Code.OK),
                    message_id=mid,
                    transaction_id=mid if msg.transaction else "",
                    offset=off,
                    recall_handle=recall_handle(msg, mid, now),
                )
                for mid, off, msg in zip(result.msg_ids, result.queue_offsets, batch, strict=False)
            ]
            return s.SendMessageResponse(status=status(Code.OK), entries=entries)

        def fail(code: int, why: str) -> Any:
            return s.SendMessageResponse(status=status(code, why))

        return await self.ctx.write(
            context, local, lambda st, md, t: st.SendMessage(request, metadata=md, timeout=t), fail
        )

    async def EndTransaction(self, request: Any, context: Any) -> Any:
        if (denied := self.ctx.denied(context)) is not None:
            return s.EndTransactionResponse(status=denied)
        tid = request.transaction_id or request.message_id
        if not tid:
            return s.EndTransactionResponse(status=status(Code.INVALID_TRANSACTION_ID, "no transaction id"))
        if request.resolution == d.TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED:
            return s.EndTransactionResponse(status=status(Code.OK, "left prepared (resolution unknown)"))
        commit = request.resolution == d.TransactionResolution.COMMIT

        async def local() -> Any:
            try:
                found = await self.store.end_transaction(tid, commit)
            except StoreError as exc:
                if exc.status in (PutStatus.NOT_LEADER, PutStatus.SERVICE_NOT_AVAILABLE):
                    raise NotMaster(exc.reason) from None
                return s.EndTransactionResponse(status=status(put_code(exc.status), exc.reason))
            if found or await self.store.query_by_id(tid) is not None:
                return s.EndTransactionResponse(status=status(Code.OK))
            return s.EndTransactionResponse(status=status(Code.INVALID_TRANSACTION_ID, f"no transaction {tid!r}"))

        def fail(code: int, why: str) -> Any:
            return s.EndTransactionResponse(status=status(code, why))

        return await self.ctx.write(
            context, local, lambda st, md, t: st.EndTransaction(request, metadata=md, timeout=t), fail
        )

    # ---- pop consumption ----
    async def ReceiveMessage(self, request: Any, context: Any) -> AsyncIterator[Any]:
        for response in await receive(self.ctx, request, context):
            yield response

    async def AckMessage(self, request: Any, context: Any) -> Any:
        if (denied := self.ctx.denied(context)) is not None:
            return s.AckMessageResponse(status=denied)
        group = store_name(request.group)
        if not request.group.name or not NAME.match(group):
            return s.AckMessageResponse(status=status(Code.ILLEGAL_CONSUMER_GROUP, "illegal consumer group"))
        if not request.entries:
            return s.AckMessageResponse(status=status(Code.BAD_REQUEST, "no entries"))

        async def local() -> Any:
            results = await self.store.ack_messages(group, [e.receipt_handle for e in request.entries])
            if any(r.status in (AckStatus.NOT_LEADER, AckStatus.SERVICE_NOT_AVAILABLE) for r in results):
                raise NotMaster(results[0].reason)
            entries = [
                s.AckMessageResultEntry(
                    message_id=e.message_id, receipt_handle=e.receipt_handle, status=status(ack_code(r.status))
                )
                for e, r in zip(request.entries, results, strict=True)
            ]
            codes = {e.status.code for e in entries}
            top = entries[0].status.code if len(codes) == 1 else Code.MULTIPLE_RESULTS
            return s.AckMessageResponse(status=status(top), entries=entries)

        def fail(code: int, why: str) -> Any:
            return s.AckMessageResponse(status=status(code, why))

        return await self.ctx.write(
            context, local, lambda st, md, t: st.AckMessage(request, metadata=md, timeout=t), fail
        )

    async def ChangeInvisibleDuration(self, request: Any, context: Any) -> Any:
        if (denied := self.ctx.denied(context)) is not None:
            return s.ChangeInvisibleDurationResponse(status=denied)
        group = store_name(request.group)
        if not request.group.name or not NAME.match(group):
            why = "illegal consumer group"
            return s.ChangeInvisibleDurationResponse(status=status(Code.ILLEGAL_CONSUMER_GROUP, why))
        invisible = ms(request.invisible_duration)
        if not 0 <= invisible <= MAX_INVISIBLE_MS:
            why = f"invisible duration {invisible} ms is not in [0, 12 h]"
            return s.ChangeInvisibleDurationResponse(status=status(Code.ILLEGAL_INVISIBLE_TIME, why))

        async def local() -> Any:
            r = await self.store.change_invisible_duration(group, request.receipt_handle, invisible)
            if r.status in (AckStatus.NOT_LEADER, AckStatus.SERVICE_NOT_AVAILABLE):
                raise NotMaster(r.reason)
            return s.ChangeInvisibleDurationResponse(status=status(ack_code(r.status)), receipt_handle=r.receipt_handle)

        def fail(code: int, why: str) -> Any:
            return s.ChangeInvisibleDurationResponse(status=status(code, why))

        return await self.ctx.write(
            context, local, lambda st, md, t: st.ChangeInvisibleDuration(request, metadata=md, timeout=t), fail
        )

    async def ForwardMessageToDeadLetterQueue(self, request: Any, context: Any) -> Any:
        return await forward_to_dlq(self.ctx, request, context)

    # ---- offsets and pull (offsets) ----
    async def QueryOffset(self, request: Any, context: Any) -> Any:
        return await query_offset(self.ctx, request, context)

    async def GetOffset(self, request: Any, context: Any) -> Any:
        return await get_offset(self.ctx, request, context)

    async def UpdateOffset(self, request: Any, context: Any) -> Any:
        return await update_offset(self.ctx, request, context)

    async def PullMessage(self, request: Any, context: Any) -> AsyncIterator[Any]:
        for response in await pull_message(self.ctx, request, context):
            yield response

    async def RecallMessage(self, request: Any, context: Any) -> Any:
        return await recall_message(self.ctx, request, context)

    # ---- not supported ----

    async def SyncLiteSubscription(self, request: Any, context: Any) -> Any:
        return s.SyncLiteSubscriptionResponse(status=status(Code.UNSUPPORTED, "lite topics are not supported"))

    async def close(self) -> None:
        await self.telemetry.close()
        await self.link.close()
