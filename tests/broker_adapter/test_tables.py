"""The LMDB tables on their own: a corrupt or foreign-layout environment is rebuilt, the applier is
deterministic (two replicas fed the same entries hold the same bytes), and broker.conf keys are read."""

from __future__ import annotations

import pathlib

import pytest

from dledger.broker_adapter import BROKER_KEYS, Message, MessageStore, StoreOptions, TopicConfig
from dledger.broker_adapter import commands as c
from dledger.broker_adapter.options import ENTRY_HEADROOM, with_entry_room
from dledger.broker_adapter.prepare import Preparer
from dledger.broker_adapter.tables import U32, Tables
from dledger.node.config import ConfigError, NodeConfig
from dledger.storage_api import Entry, EntryKind
from tests.broker_adapter.group_util import dump


def entries() -> list[Entry]:
    prep = Preparer(StoreOptions(default_queue_count=2), lambda name: None)
    creates, put, _ = prep.prepare([Message("T", b"a", keys=("k",)), Message("T", b"b", queue_id=1)], 1000)
    _, put2, _ = prep.prepare([Message("T", b"late", queue_id=0, delivery_timestamp=1500)], 1001)
    out = [c.encode_command(cmd) for cmd in creates]
    out.append(c.encode_put(1, 1000, put.topics, put.metas, put.blobs))
    out.append(c.encode_put(2, 1001, put2.topics, put2.metas, put2.blobs))
    out.append(c.encode_command(c.CommitOffset(3, 1002, "G", "T", 0, 1)))
    out.append(c.encode_command(c.PopReceive(4, 1003, "G", "T", -1, 0, 10, 100, 3)))
    out.append(b"someone else's entry")
    out.append(c.MAGIC + b"\x01\x05garbage")  # malformed: skipped, changes nothing
    out.append(c.encode_command(c.Tick(5, 2000)))  # releases the delayed message
    return [Entry(i + 1, 1, data) for i, data in enumerate(out)] + [Entry(len(out) + 1, 2, b"", EntryKind.NOOP)]


def test_two_replicas_fed_the_same_entries_hold_the_same_bytes(tmp_path: pathlib.Path) -> None:
    log = entries()
    stores = [MessageStore(tmp_path / name) for name in ("a", "b")]
    for store in stores:
        for entry in log:
            store.apply(entry)
    a, b = (dump(s) for s in stores)
    assert a == b
    # the pop started queue 0 at G's committed offset 1 (empty until the delayed message came): one in flight
    assert len(a["cq"]) == 3 and len(a["timers"]) == 0 and len(a["inflight"]) == 1
    assert len(a["ids"]) == 3 and len(a["keys"]) == 1 and len(a["offsets"]) == 1
    assert stores[0].last_applied() == len(log) - 1  # the trailing no-op opens no transaction
    for store in stores:
        store.close()


def test_a_corrupt_or_foreign_layout_environment_is_rebuilt(tmp_path: pathlib.Path) -> None:
    store = MessageStore(tmp_path)
    for entry in entries():
        store.apply(entry)
    assert store.last_applied() > 0
    store.close()
    (tmp_path / "broker" / "data.mdb").write_bytes(b"\xff" * 8192)
    rebuilt = Tables(tmp_path / "broker")
    assert rebuilt.rebuilt and rebuilt.applied() == 0
    with rebuilt.env.begin(write=True) as txn:
        txn.put(b"layout", U32.pack(99), db=rebuilt.db["meta"])
        txn.put(b"applied", (7).to_bytes(8, "big"), db=rebuilt.db["meta"])
    rebuilt.close()
    again = Tables(tmp_path / "broker")
    assert again.rebuilt and again.applied() == 0
    again.close()


def test_broker_conf_keys(tmp_path: pathlib.Path) -> None:
    conf = tmp_path / "broker.conf"
    conf.write_text(
        "dLegerGroup=g\ndLegerPeers=n0-127.0.0.1:40911\ndLegerSelfId=n0\n"
        f"storePathRootDir={tmp_path / 'store'}\nautoCreateTopicEnable=false\ndefaultTopicQueueNums=4\n"
        "diskMaxUsedSpaceRatio=80\nfileReservedTime=48\nmaxReconsumeTimes=5\n"
    )
    store = MessageStore.from_file(conf)
    opts = store.options
    assert (opts.auto_create_topic, opts.default_queue_count, opts.disk_max_used_ratio) == (False, 4, 0.8)
    assert (opts.file_reserved_hours, opts.max_delivery_attempts) == (48.0, 5)
    assert "diskMaxUsedSpaceRatio" in BROKER_KEYS
    store.close()
    with pytest.raises(ConfigError, match="autoCreateTopicEnable"):
        StoreOptions.from_properties({"autoCreateTopicEnable": "maybe"})
    with pytest.raises(ConfigError, match=r"disk_max_used_ratio"):
        StoreOptions.from_properties({"diskMaxUsedSpaceRatio": "150"})
    assert NodeConfig.from_file(conf, other_keys=BROKER_KEYS).group == "g"
    assert TopicConfig("T", 1).queue_count == 1


def test_a_full_lmdb_map_grows_and_the_batch_is_applied_again(tmp_path: pathlib.Path) -> None:
    prep = Preparer(StoreOptions(default_queue_count=4), lambda name: None)
    log = []
    for k in range(60):
        creates, put, _ = prep.prepare([Message("T", b"x" * 100, keys=(f"k{k}",)) for _ in range(16)], 1000 + k)
        log += [c.encode_command(cmd) for cmd in creates] if k == 0 else []
        log.append(c.encode_put(k, 1000 + k, put.topics, put.metas, put.blobs))
    small = MessageStore(tmp_path / "small", StoreOptions(map_size=1 << 17))
    big = MessageStore(tmp_path / "big")
    for store in (small, big):
        for i, data in enumerate(log):
            store.apply(Entry(i + 1, 1, data))
    assert small.tables.map_size > 1 << 17  # it grew (more than once: the tables need well over 128 KiB)
    assert dump(small) == dump(big) and small.last_applied() == len(log)
    small.close()
    big.close()


def test_layout_1_tables_get_their_pins_in_place(tmp_path: pathlib.Path) -> None:
    """Layout 2 added `pins`; tables of layout 1 are indexed in place, not wiped (a compacted log could not
    rebuild them)."""
    prep = Preparer(StoreOptions(default_queue_count=1), lambda name: None)
    creates, put, _ = prep.prepare([Message("T", b"a"), Message("T", b"late", delivery_timestamp=9_000)], 1000)
    _, half, _ = prep.prepare([Message("T", b"prepared", transaction=True)], 1001)
    data = [c.encode_command(cmd) for cmd in creates]
    data.append(c.encode_put(1, 1000, put.topics, put.metas, put.blobs))
    data.append(c.encode_put(2, 1001, half.topics, half.metas, half.blobs))
    data.append(c.encode_command(c.PopReceive(3, 1002, "G", "T", -1, 0, 10, 100, 3)))
    store = MessageStore(tmp_path / "s")
    for i, raw in enumerate(data):
        store.apply(Entry(i + 1, 1, raw))
    pins = dump(store)["pins"]
    assert len(pins) == 3 and store.tables.first_pinned() == 2  # the timer, the prepared and the popped message
    with store.tables.env.begin(write=True) as txn:  # make it look like layout 1
        txn.drop(store.tables.db["pins"], delete=False)
        txn.put(b"layout", U32.pack(1), db=store.tables.db["meta"])
    store.close()
    store = MessageStore(tmp_path / "s")
    assert not store.tables.rebuilt and store.last_applied() == len(data)
    assert dump(store)["pins"] == pins
    store.close()


def test_consume_from_where_and_the_entry_room_for_a_full_body(tmp_path: pathlib.Path) -> None:
    assert StoreOptions.from_properties({}).consume_from_last is True
    first = StoreOptions.from_properties({"consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET"})
    assert first.consume_from_last is False
    with pytest.raises(ConfigError, match="consumeFromWhere"):
        StoreOptions.from_properties({"consumeFromWhere": "LAST"})
    node = NodeConfig(self_id="n0", peers={"n0": "127.0.0.1:40911"}, store_dir=tmp_path)
    # maxMessageSize limits the body: the log entry needs room for its headers and properties too
    assert with_entry_room(node, StoreOptions()).max_entry_bytes == (4 << 20) + ENTRY_HEADROOM
    assert with_entry_room(node, StoreOptions(max_message_bytes=8 << 20)).max_entry_bytes == (9 << 20)
