"""The admin RPC's handler (JSON requests, authorization by the client grants) and the broker metrics."""

from __future__ import annotations

import json
import pathlib
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from rocketmq.grpc_protocol import definition_pb2 as d  # type: ignore[import-untyped]

from dledger.broker_adapter import Message, MessageStore
from dledger.broker_adapter.admin_model import GroupConfig, StartFrom
from dledger.broker_adapter.admin_ops import run_op
from dledger.broker_adapter.admin_service import MAX_REQUEST_BYTES, AdminService
from dledger.broker_adapter.broker_metrics import BrokerCollector
from dledger.cli.admin import render, table
from dledger.node.client_auth import ClientGrants
from dledger.rocketmq.v5.telemetry import Telemetry
from tests.broker_adapter.group_util import FakeClock
from tests.broker_adapter.single_util import run_single

READER = "r" * 20
ADMIN = "a" * 20


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self, token: str | None = None) -> None:
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.aborted: tuple[Any, str] | None = None

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self.metadata

    def auth_context(self) -> dict[str, Any]:
        return {}

    async def abort(self, code: Any, details: str) -> None:
        self.aborted = (code, details)
        raise Aborted(details)


async def call(service: AdminService, request: Any, token: str | None = None) -> dict[str, Any]:
    raw = request if isinstance(request, bytes) else json.dumps(request).encode()
    answer: dict[str, Any] = json.loads(await service.call(raw, FakeContext(token)))
    return answer


def test_bad_requests_get_one_line_answers(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        service = AdminService(store, {"s0": "127.0.0.1:1"})
        for raw, why in (
            (b"\xff\xfe", "not JSON"),
            (b"[1, 2]", "JSON object"),
            (b"{}", "unknown op"),
            (b"x" * (MAX_REQUEST_BYTES + 1), "over"),
        ):
            answer = await call(service, raw)
            assert answer["ok"] is False and answer["code"] == "BAD_REQUEST" and why in answer["error"]
        for req, why in (
            ({"op": "topic.create", "topic": "T", "queues": "8"}, "'queues' must be an integer"),
            ({"op": "topic.create", "topic": "T", "queues": True}, "'queues' must be an integer"),
            ({"op": "topic.create", "topic": "T", "type": "ODD"}, "type 'ODD'"),
            ({"op": "topic.create", "topic": "T", "perm": "x"}, "permission 'x'"),
            ({"op": "topic.create", "topic": "bad name!"}, "must be 1-127"),
            ({"op": "group.create", "group": "G", "fifo": "yes"}, "'fifo' must be a bool"),
            ({"op": "group.create", "group": "G", "start": "timestamp"}, "needs 'start_ms'"),
            ({"op": "group.create", "group": "G", "max_attempts": 0}, "max attempts 0"),
            ({"op": "group.update", "group": "G"}, "does not exist"),
            ({"op": "progress"}, "'group' is required"),
        ):
            answer = await call(service, req)
            assert answer["ok"] is False and why in answer["error"], (req, answer)
        made = await call(service, {"op": "group.create", "group": "G", "backoff_multiplier": 1.5, "fifo": True})
        assert made["ok"] and made["result"]["backoff_multiplier"] == 1.5 and made["result"]["fifo"] is True
        kept = await call(service, {"op": "group.update", "group": "G", "max_attempts": 3})
        assert kept["result"]["fifo"] is True and kept["result"]["max_attempts"] == 3  # what is not given stays

    run_single(tmp_path, body)


def test_with_grants_reads_need_read_and_writes_need_admin(tmp_path: pathlib.Path) -> None:
    grants = ClientGrants.parse(f"read token:{READER}\nall token:{ADMIN}\n")

    async def body(store: MessageStore, clock: FakeClock) -> None:
        service = AdminService(store, {"s0": "127.0.0.1:1"}, grants)
        ctx = FakeContext()
        with pytest.raises(Aborted):
            await service.call(b'{"op": "topic.list"}', ctx)
        assert ctx.aborted is not None and ctx.aborted[0] == grpc.StatusCode.UNAUTHENTICATED
        assert (await call(service, {"op": "topic.list"}, READER))["ok"]
        ctx = FakeContext(READER)
        with pytest.raises(Aborted):
            await service.call(b'{"op": "topic.create", "topic": "T"}', ctx)
        assert ctx.aborted is not None and ctx.aborted[0] == grpc.StatusCode.PERMISSION_DENIED
        assert "admin" in ctx.aborted[1]
        assert (await call(service, {"op": "topic.create", "topic": "T"}, ADMIN))["ok"]
        assert store.topic("T") is not None

    run_single(tmp_path, body)


def test_a_replica_that_is_not_master_names_the_leader(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        store._master = False  # as a follower would be
        service = AdminService(store, {"s0": "127.0.0.1:9"})
        answer = await call(service, {"op": "topic.create", "topic": "T"})
        assert answer["code"] == "NOT_MASTER" and answer["leader"] == "127.0.0.1:9"
        assert (await call(service, {"op": "topic.list"}))["code"] == "NOT_MASTER"
        assert (await call(service, {"op": "topic.list", "any_replica": True}))["ok"]
        store._master = True

    run_single(tmp_path, body)


def test_broker_metrics_per_topic_and_group(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.put_topic("T", create=True, queue_count=1)
        await store.put_group(GroupConfig("G", max_attempts=2, start=StartFrom.FIRST), create=True)
        await store.put_messages([Message("T", b"a"), Message("T", b"b"), Message("T", b"c")])
        got = await store.pop_messages("G", "T", max_count=2, invisible_ms=100)
        await store.ack_message("G", got.messages[0].receipt_handle)
        for _ in range(2):  # b: redelivered once, then dead-lettered
            clock.advance(100)
            await store.pop_messages("G", "T", max_count=1, invisible_ms=100)
        registry = CollectorRegistry()
        registry.register(BrokerCollector(store))
        text = generate_latest(registry).decode()
        assert 'dledger_broker_messages_in_total{topic="T"} 3.0' in text
        assert 'dledger_broker_messages_out_total{group="G",topic="T"} 3.0' in text
        assert 'dledger_broker_retries_total{group="G",topic="T"} 1.0' in text
        assert 'dledger_broker_acks_total{group="G",topic="T"} 1.0' in text
        assert 'dledger_broker_dlq_total{group="G",topic="T"} 1.0' in text
        assert 'dledger_broker_lag{group="G",topic="T"} 0.0' in text
        assert 'dledger_broker_inflight{group="G",topic="T"} 1.0' in text
        assert 'dledger_broker_messages_in_total{topic="%DLQ%G"} 1.0' in text
        rows = [r.as_dict() for r in store.progress("G")]
        assert await run_op(store, {"op": "progress", "group": "G"}) == {"ok": True, "result": rows}

    run_single(tmp_path, body)


def test_tables_for_people() -> None:
    text = table([{"a": 1, "bb": "long value"}, {"a": 22}], ("a", "bb"))
    assert text.splitlines() == ["A   BB", "1   long value", "22"]
    assert render("topic.delete", None) == "done"
    assert "no progress" in render("progress", [])


def test_a_configured_group_gets_its_retry_policy_and_fifo_flag_in_the_settings(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        cfg = GroupConfig("G", max_attempts=3, backoff_initial_ms=500, backoff_max_ms=8000, fifo=True)
        await store.put_group(cfg, create=True)
        telemetry = Telemetry(SimpleNamespace(store=store))  # type: ignore[arg-type]
        asked = d.Settings(subscription=d.Subscription(group=d.Resource(name="G")))
        out = telemetry.reply(asked).settings
        assert out.backoff_policy.max_attempts == 3 and out.subscription.fifo is True
        eb = out.backoff_policy.exponential_backoff
        assert (eb.initial.nanos, eb.max.seconds, eb.multiplier) == (500_000_000, 8, 2.0)
        other = telemetry.reply(d.Settings(subscription=d.Subscription(group=d.Resource(name="H")))).settings
        assert other.backoff_policy.max_attempts == store.options.max_delivery_attempts
        assert other.backoff_policy.HasField("customized_backoff")

    run_single(tmp_path, body)
