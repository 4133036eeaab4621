"""The official C++ client (rocketmq-client-cpp 2.1.0 through rocketmq-python-cvs, in worker processes)
against one replica's remoting face: sends of every kind, push consumers receiving them with their fields,
tag filtering, compressed bodies, a failing listener's messages through the retry topic into the DLQ."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator

import pytest

from tests.rocketmq_remoting.util import InProcessBroker, Worker, cpp_client, eventually

pytestmark = pytest.mark.process  # C++ client worker processes (and broker processes)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessBroker]:
    cpp_client()
    # every delay level 1 s, so a failing listener's 16 redeliveries take seconds, not hours
    b = InProcessBroker(tmp_path_factory.mktemp("remoting"), {"messageDelayLevel": " ".join(["1s"] * 18)}).start()
    try:
        yield b
    finally:
        b.stop()


def test_sync_send_and_push_consume_with_fields(broker: InProcessBroker, tmp_path: pathlib.Path) -> None:
    broker.create_topic("T1", 4)
    prod = Worker(tmp_path, "p", "produce", "--namesrv", broker.namesrv, "--topic", "T1", "--group", "pg1",
                  "--count", "20", "--tags", "TagA,TagB")  # fmt: skip
    sent = {r["body"]: r for r in prod.wait_done()}
    assert len(sent) == 20 and all(r["status"] == "OK" for r in sent.values()), sent
    cons = Worker(tmp_path, "c", "consume", "--namesrv", broker.namesrv, "--topic", "T1", "--group", "cg1")
    try:
        eventually("every message received", lambda: len({m["body"] for m in cons.messages()}) >= 20)
        got = {m["body"]: m for m in cons.messages()}
    finally:
        cons.kill()
    assert set(got) == set(sent)
    for body, m in got.items():
        i = int(body.rsplit("-", 1)[1])
        assert m["id"] == sent[body]["msg_id"]
        assert (m["tags"], m["keys"], m["seq"], m["topic"]) == (
            "TagA" if i % 2 == 0 else "TagB",
            f"key-{body}",
            str(i),
            "T1",
        )
        assert m["reconsume"] == 0
    offsets = {(m["queue"], m["offset"]) for m in got.values()}
    assert len(offsets) == 20  # each message its own queue offset


def test_async_sends_share_proposals_and_each_gets_its_own_answer(
    broker: InProcessBroker, tmp_path: pathlib.Path
) -> None:
    broker.create_topic("TA", 2)
    prod = Worker(tmp_path, "p", "produce", "--namesrv", broker.namesrv, "--topic", "TA", "--group", "pga",
                  "--count", "300", "--mode", "async", "--inflight", "32")  # fmt: skip
    sent = prod.wait_done()
    assert len(sent) == 300 and all(r.get("status") == "OK" for r in sent), [r for r in sent if "error" in r][:3]
    assert len({r["body"] for r in sent}) == len({r["msg_id"] for r in sent}) == 300
    done = [r for r in prod.records() if r.get("done")]
    assert done[0]["callback_refs"] == 0  # the worker kept no send's callbacks once it was answered
    bodies = {r["body"] for r in sent}
    cons = Worker(tmp_path, "c", "consume", "--namesrv", broker.namesrv, "--topic", "TA", "--group", "cga")
    try:
        eventually("every async send received", lambda: {m["body"] for m in cons.messages()} >= bodies)
        got = {m["body"]: m for m in cons.messages()}
    finally:
        cons.kill()
    assert {got[r["body"]]["id"] for r in sent} == {r["msg_id"] for r in sent}
    assert len({(m["queue"], m["offset"]) for m in got.values()}) == 300


def test_tag_subscription_receives_only_its_tag(broker: InProcessBroker, tmp_path: pathlib.Path) -> None:
    broker.create_topic("T2", 2)
    prod = Worker(tmp_path, "p", "produce", "--namesrv", broker.namesrv, "--topic", "T2", "--group", "pg2",
                  "--count", "30", "--tags", "TagA,TagB,TagC")  # fmt: skip
    assert all(r["status"] == "OK" for r in prod.wait_done())
    cons = Worker(tmp_path, "c", "consume", "--namesrv", broker.namesrv, "--topic", "T2", "--group", "cg2",
                  "--expr", "TagA || TagC")  # fmt: skip
    try:
        eventually("the TagA and TagC messages", lambda: len({m["body"] for m in cons.messages()}) >= 20)
        prod2 = Worker(tmp_path, "p2", "produce", "--namesrv", broker.namesrv, "--topic", "T2", "--group", "pg2",
                       "--count", "3", "--tags", "TagB", "--prefix", "late")  # fmt: skip
        prod2.wait_done()
        marker = Worker(tmp_path, "p3", "produce", "--namesrv", broker.namesrv, "--topic", "T2", "--group", "pg2",
                        "--count", "2", "--tags", "TagC", "--prefix", "marker")  # fmt: skip
        marker.wait_done()
        eventually(
            "the TagC markers sent after the TagB ones",
            lambda: sum(m["body"].startswith("marker") for m in cons.messages()) >= 2,
        )
        got = cons.messages()
    finally:
        cons.kill()
    assert {m["tags"] for m in got} == {"TagA", "TagC"}
    assert len({m["body"] for m in got}) == 22


def test_batch_oneway_orderly_compressed_and_delayed_sends(broker: InProcessBroker, tmp_path: pathlib.Path) -> None:
    broker.create_topic("T3", 4)
    runs = [
        ("batch", ["--mode", "batch", "--batch", "4", "--count", "3"]),
        ("oneway", ["--mode", "oneway", "--count", "5"]),
        ("orderly", ["--mode", "orderly", "--count", "6"]),
        ("zip", ["--pad", "5000", "--count", "3"]),  # over compressMsgBodyOverHowmuch (4 KiB): zlib
        ("delay", ["--delay-level", "2", "--count", "2"]),
    ]
    expected = set()
    for name, extra in runs:
        w = Worker(tmp_path, name, "produce", "--namesrv", broker.namesrv, "--topic", "T3", "--group", "pg3",
                   "--prefix", name, *extra)  # fmt: skip
        done = w.wait_done()
        assert done and all("error" not in r for r in done), done
        for r in done:
            if name == "batch":
                expected |= {f"{r['body']}-{k}" for k in range(4)}
            else:
                expected.add(r["body"])
    cons = Worker(tmp_path, "c", "consume", "--namesrv", broker.namesrv, "--topic", "T3", "--group", "cg3")
    try:
        eventually("every message", lambda: {m["body"] for m in cons.messages()} >= expected)
    finally:
        cons.kill()
    bodies = {m["body"] for m in cons.messages()}
    assert bodies == expected
    assert any(len(b) > 5000 for b in bodies)  # the compressed ones arrive inflated, whole


def test_a_failing_listener_goes_through_retry_into_the_dlq(broker: InProcessBroker, tmp_path: pathlib.Path) -> None:
    broker.create_topic("T4", 1)
    prod = Worker(tmp_path, "p", "produce", "--namesrv", broker.namesrv, "--topic", "T4", "--group", "pg4",
                  "--count", "1", "--prefix", "poison")  # fmt: skip
    assert prod.wait_done()[0]["status"] == "OK"
    cons = Worker(
        tmp_path, "c", "consume", "--namesrv", broker.namesrv, "--topic", "T4", "--group", "cg4", "--fail-all"
    )
    try:
        # the first delivery and 16 redeliveries (maxReconsumeTimes 16), each from %RETRY%cg4
        eventually("17 deliveries", lambda: len(cons.messages()) >= 17, timeout=240)
        eventually("the dead-letter queue", lambda: broker.lt.run(_dlq_bodies(broker, "cg4")), timeout=60)
    finally:
        cons.kill()
    got = cons.messages()
    assert [m["reconsume"] for m in got[:17]] == list(range(17))
    assert all(m["topic"] == "T4" and m["body"] == "poison-0" for m in got)  # the retry topic is hidden
    assert broker.lt.run(_dlq_bodies(broker, "cg4")) == ["poison-0"]


async def _dlq_bodies(broker: InProcessBroker, group: str) -> list[str]:
    if broker.store.topic(f"%DLQ%{group}") is None:
        return []
    result = await broker.store.get_messages("x", f"%DLQ%{group}", 0, 0, 10)
    return [m.message.body.decode() for m in result.messages]


def test_orderly_consumer_gets_each_queue_in_order(broker: InProcessBroker, tmp_path: pathlib.Path) -> None:
    broker.create_topic("T5", 3)
    prod = Worker(tmp_path, "p", "produce", "--namesrv", broker.namesrv, "--topic", "T5", "--group", "pg5",
                  "--count", "12", "--mode", "orderly")  # fmt: skip
    sent = [r["body"] for r in prod.wait_done()]
    assert len(sent) == 12
    o = Worker(tmp_path, "o", "consume", "--namesrv", broker.namesrv, "--topic", "T5", "--group", "og", "--orderly")
    try:
        eventually("every message", lambda: {m["body"] for m in o.messages()} >= set(sent))
    finally:
        o.kill()
    by_queue: dict[int, list[int]] = {}
    for m in o.messages():
        by_queue.setdefault(m["queue"], []).append(int(m["body"].rsplit("-", 1)[1]))
    assert all(seq == sorted(seq) for seq in by_queue.values())  # each queue in send order
    assert {q: sorted(s) for q, s in by_queue.items()} == {q: [i for i in range(12) if i % 3 == q] for q in by_queue}


def test_broadcasting_consumers_each_get_every_message(broker: InProcessBroker, tmp_path: pathlib.Path) -> None:
    broker.create_topic("T6", 2)
    common = ("--namesrv", broker.namesrv, "--topic", "T6", "--group", "bg", "--broadcast")
    b1 = Worker(tmp_path, "b1", "consume", *common, "--instance", "b1")
    b2 = Worker(tmp_path, "b2", "consume", *common, "--instance", "b2")
    prod = Worker(tmp_path, "p", "produce", "--namesrv", broker.namesrv, "--topic", "T6", "--group", "pg6",
                  "--count", "-1", "--interval", "0.05")  # fmt: skip
    try:
        # a broadcasting consumer starts at the end of each queue: it gets what is sent once it runs
        eventually("both consuming", lambda: len(b1.messages()) >= 10 and len(b2.messages()) >= 10)
        prod.kill()
        acked = {int(r["body"].rsplit("-", 1)[1]) for r in prod.records() if r.get("status") == "OK"}
        first = max(min(int(m["body"].rsplit("-", 1)[1]) for m in w.messages()) for w in (b1, b2))
        want = {f"m-{i}" for i in acked if i >= first + 10}  # (a margin for queues not yet rebalanced)
        for w in (b1, b2):
            eventually(f"{w.path.stem} got everything", lambda w=w: {m["body"] for m in w.messages()} >= want)
    finally:
        for w in (prod, b1, b2):
            w.kill()


def test_acl_signatures_of_the_cpp_client(tmp_path: pathlib.Path) -> None:
    b = InProcessBroker(tmp_path / "acl", {"accessKey": "ak1", "secretKey": "sk1"}).start()
    try:
        b.create_topic("TA", 2)
        common = ("--namesrv", b.namesrv, "--topic", "TA", "--count", "5")
        good = Worker(tmp_path, "good", "produce", *common, "--group", "pa", "--ak", "ak1", "--sk", "sk1")
        assert all(r["status"] == "OK" for r in good.wait_done())
        bad = Worker(tmp_path, "bad", "produce", *common, "--group", "pb", "--ak", "ak1", "--sk", "wrong")
        assert all("error" in r for r in bad.wait_done())
        cons = Worker(tmp_path, "c", "consume", "--namesrv", b.namesrv, "--topic", "TA", "--group", "ca",
                      "--ak", "ak1", "--sk", "sk1")  # fmt: skip
        try:
            eventually("the signed consumer's messages", lambda: len({m["body"] for m in cons.messages()}) >= 5)
        finally:
            cons.kill()
    finally:
        b.stop()


def test_per_topic_and_group_permissions_with_the_cpp_client(tmp_path: pathlib.Path) -> None:
    accounts = {"accounts": [
        {"accessKey": "app", "secretKey": "app-secret", "defaultTopicPerm": "DENY", "defaultGroupPerm": "DENY",
         "topicPerms": ["TP=PUB|SUB", "TS=SUB"], "groupPerms": ["cg=SUB"]},
    ]}  # fmt: skip
    (tmp_path / "acl.json").write_text(json.dumps(accounts))
    b = InProcessBroker(tmp_path / "b", {"aclFile": str(tmp_path / "acl.json")}).start()
    try:
        b.create_topic("TP", 2)
        b.create_topic("TS", 2)
        creds = ("--ak", "app", "--sk", "app-secret")
        ok = Worker(tmp_path, "ok", "produce", "--namesrv", b.namesrv, "--topic", "TP", "--count", "5",
                    "--group", "pa", *creds)  # fmt: skip
        assert all(r["status"] == "OK" for r in ok.wait_done())
        denied = Worker(tmp_path, "denied", "produce", "--namesrv", b.namesrv, "--topic", "TS", "--count", "2",
                        "--group", "pb", *creds)  # fmt: skip
        assert all("error" in r for r in denied.wait_done())  # SUB only: no sends
        assert b.store.max_offset("TS", 0) == b.store.max_offset("TS", 1) == 0
        cons = Worker(tmp_path, "c", "consume", "--namesrv", b.namesrv, "--topic", "TP", "--group", "cg", *creds)
        try:
            eventually("the permitted group's messages", lambda: len({m["body"] for m in cons.messages()}) >= 5)
        finally:
            cons.kill()
    finally:
        b.stop()
