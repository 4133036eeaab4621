"""NodeConfig: keyword arguments, RocketMQ-style properties files, and clear errors for bad values."""

from __future__ import annotations

import logging
import pathlib
import re

import pytest

from dledger.node.config import PROPERTY_KEYS, ConfigError, NodeConfig, format_peers, load_properties, parse_peers
from dledger.node.config_keys import ROCKETMQ_BROKER_KEYS

PEERS = "n0-127.0.0.1:40911;n1-127.0.0.1:40912;n2-127.0.0.1:40913"


def write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "broker.conf"
    path.write_text(text)
    return path


def test_parse_peers_keeps_order_and_round_trips() -> None:
    peers = parse_peers(PEERS)
    assert list(peers) == ["n0", "n1", "n2"]
    assert peers["n1"] == "127.0.0.1:40912"
    assert format_peers(peers) == PEERS


def test_parse_peers_accepts_ipv6_and_trailing_separator() -> None:
    peers = parse_peers("a-[::1]:1;b-localhost:2;")
    assert peers == {"a": "[::1]:1", "b": "localhost:2"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("n0-127.0.0.1", "host:port"),
        ("n0-127.0.0.1:0", "host:port"),
        ("n0-127.0.0.1:70000", "host:port"),
        ("n0127.0.0.1:1", "ID-host:port"),
        ("n0-h:1;n0-h:2", "appears twice"),
        ("n 0-h:1", "letters, digits"),
        ("", "names no peers"),
        ("n0-127.0.0.1:1,n1-127.0.0.1:2", "separate the peers with ';'"),
        ("n0-h:1 n1-h:2", "is not a name or an IP address"),
    ],
)
def test_parse_peers_rejects_bad_input(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="dLegerPeers") as info:
        parse_peers(text)
    assert fragment in str(info.value)


def test_broker_conf_maps_rocketmq_keys(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        f"""# a RocketMQ broker.conf
brokerClusterName = DefaultCluster
dLegerGroup=RaftNode00
dLegerPeers={PEERS}
dLegerSelfId = n1
storePathRootDir : {tmp_path}/store
flushDiskType=SYNC_FLUSH
fileReservedTime=48
mappedFileSizeCommitLog=1048576
dledgerDropBehindBytes=0
preferredLeaderId=n2
""",
    )
    config = NodeConfig.from_file(path, other_keys={"brokerClusterName"})
    assert config.group == "RaftNode00"
    assert config.self_id == "n1"
    assert config.address == "127.0.0.1:40912"
    assert config.store_dir == tmp_path / "store"
    assert config.flush == "sync"
    assert config.file_reserved_hours == 48.0
    assert config.segment_bytes == 1 << 20
    assert config.drop_behind_bytes == 0
    assert config.preferred_leader == "n2"


def test_unknown_keys_are_warned_about(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, f"dLegerPeers={PEERS}\ndLegerSelfId=n0\nstorePathRootDir=/s\nbogusKey=1\n")
    with caplog.at_level(logging.WARNING, logger="dledger.node.config"):
        NodeConfig.from_file(path)
    assert "bogusKey" in caplog.text


def test_misspelled_durability_key_is_refused_naming_the_likely_key(tmp_path: pathlib.Path) -> None:
    """`flushDiskTpye=SYNC_FLUSH` must not start a node on async flush."""
    path = write(tmp_path, f"dLegerPeers={PEERS}\ndLegerSelfId=n0\nstorePathRootDir=/s\nflushDiskTpye=SYNC_FLUSH\n")
    with pytest.raises(ConfigError, match=r"'flushDiskTpye' \(did you mean 'flushDiskType'\?\)"):
        NodeConfig.from_file(path)


@pytest.mark.parametrize(("key", "likely"), [("dlegerPeers", "dLegerPeers"), ("maxMesageSize", "maxMessageSize"),
                                             ("dledgerHeartbeatMS", "dledgerHeartbeatMs")])  # fmt: skip
def test_near_misses_of_known_keys_are_refused(tmp_path: pathlib.Path, key: str, likely: str) -> None:
    path = write(tmp_path, f"dLegerPeers={PEERS}\ndLegerSelfId=n0\nstorePathRootDir=/s\n{key}=1\n")
    with pytest.raises(ConfigError, match=f"did you mean '{likely}'"):
        NodeConfig.from_file(path)


def test_near_miss_of_a_key_another_layer_reads_is_refused(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, f"dLegerPeers={PEERS}\ndLegerSelfId=n0\nstorePathRootDir=/s\ngrpcServerPrt=1\n")
    with pytest.raises(ConfigError, match="did you mean 'grpcServerPort'"):
        NodeConfig.from_file(path, other_keys={"grpcServerPort"})


def test_rocketmq_broker_keys_are_accepted_quietly(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    rocketmq = (
        "brokerClusterName=DefaultCluster\nbrokerName=broker-a\nbrokerId=0\ndeleteWhen=04\nbrokerRole=ASYNC_MASTER\n"
    )
    rocketmq += "namesrvAddr=127.0.0.1:9876\nenableDLegerCommitLog=true\nsendMessageThreadPoolNums=16\n"
    path = write(tmp_path, f"dLegerPeers={PEERS}\ndLegerSelfId=n0\nstorePathRootDir=/s\n{rocketmq}")
    with caplog.at_level(logging.WARNING):
        NodeConfig.from_file(path)
    assert caplog.records == []


def test_other_unknown_keys_are_one_warning_line(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, f"dLegerPeers={PEERS}\ndLegerSelfId=n0\nstorePathRootDir=/s\nzzTop=1\nmyOwnSetting=2\n")
    with caplog.at_level(logging.WARNING):
        NodeConfig.from_file(path)
    assert len(caplog.records) == 1 and "myOwnSetting, zzTop" in caplog.records[0].getMessage()


def test_overrides_win_over_the_file(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, f"dLegerPeers={PEERS}\ndLegerSelfId=n0\nstorePathRootDir=/s\nflushDiskType=ASYNC_FLUSH\n")
    config = NodeConfig.from_file(path, overrides={"self_id": "n2", "flush": "sync", "group": None})
    assert (config.self_id, config.flush, config.group) == ("n2", "sync", "default")


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("flushDiskType=SOMETIMES", "flushDiskType: 'SOMETIMES'"),
        ("fileReservedTime=soon", "fileReservedTime: 'soon'"),
        ("fileReservedTime=0", "file_reserved_hours: 0.0"),
        ("mappedFileSizeCommitLog=12", "segment_bytes: 12"),
        ("mappedFileSizeCommitLog=1GB", "mappedFileSizeCommitLog: '1GB'"),
        ("dledgerDropBehindBytes=-1", "drop_behind_bytes: -1"),
        ("preferredLeaderId=n9", "preferred_leader: 'n9'"),
        ("dLegerSelfId=n7", "self_id: 'n7'"),
        ("dledgerLeaseRead=maybe", "dledgerLeaseRead: 'maybe'"),
        ("dLegerGroup=a;b", "group: 'a;b'"),
    ],
)
def test_bad_values_name_the_key_and_value(tmp_path: pathlib.Path, line: str, fragment: str) -> None:
    path = write(tmp_path, f"dLegerPeers={PEERS}\ndLegerSelfId=n0\nstorePathRootDir=/s\n{line}\n")
    with pytest.raises(ConfigError) as info:
        NodeConfig.from_file(path)
    assert fragment in str(info.value)


def test_missing_required_keys_are_named(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "dLegerGroup=g\n")
    with pytest.raises(ConfigError, match=r"dLegerPeers.*dLegerSelfId|dLegerSelfId.*dLegerPeers") as info:
        NodeConfig.from_file(path)
    assert "storePathRootDir" in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.conf"):
        load_properties(tmp_path / "nope.conf")


def test_binary_file_is_a_config_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bin.conf"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_properties(path)


def test_properties_syntax_comments_continuations_escapes(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        "! comment\n  # indented comment\n\na = 1\nb:2\nc 3\n"
        "long = one\\\n   two\nesc = x\\:y\\=z\\u0041\\\\\nempty=\n",
    )
    assert load_properties(path) == {"a": "1", "b": "2", "c": "3", "long": "onetwo", "esc": "x:y=zA\\", "empty": ""}


def test_group_names_may_hold_a_dash(tmp_path: pathlib.Path) -> None:
    """RocketMQ users name the group like their brokerName: `broker-a`."""
    path = write(tmp_path, f"dLegerGroup=broker-a\ndLegerPeers={PEERS}\ndLegerSelfId=n0\nstorePathRootDir=/s\n")
    assert NodeConfig.from_file(path).group == "broker-a"
    assert NodeConfig(self_id="n0", peers=parse_peers(PEERS), store_dir=pathlib.Path("/s"), group="a-b.c_d").group
    with pytest.raises(ConfigError, match="group: 'a b'"):
        NodeConfig(self_id="n0", peers=parse_peers(PEERS), store_dir=pathlib.Path("/s"), group="a b")


def test_peers_may_be_the_peers_string() -> None:
    """`NodeConfig(peers=...)` takes what `DLedgerClient` takes: the dLegerPeers string, or a mapping."""
    config = NodeConfig(self_id="n1", peers=PEERS, store_dir=pathlib.Path("/s"))  # type: ignore[arg-type]
    assert config.peers == parse_peers(PEERS) and config.address == "127.0.0.1:40912"
    with pytest.raises(ConfigError, match="peers: 'h' is not host:port"):
        NodeConfig(self_id="n0", peers="n0-h", store_dir=pathlib.Path("/s"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="neither a mapping"):
        NodeConfig(self_id="n0", peers=[("n0", "h:1")], store_dir=pathlib.Path("/s"))  # type: ignore[arg-type]


def test_keyword_construction_validates() -> None:
    peers = parse_peers(PEERS)
    with pytest.raises(ConfigError, match="used by two nodes"):
        NodeConfig(self_id="n0", peers={"n0": "h:1", "n1": "h:1"}, store_dir=pathlib.Path("/s"))
    with pytest.raises(ConfigError, match="heartbeat_ms"):
        NodeConfig(self_id="n0", peers=peers, store_dir=pathlib.Path("/s"), heartbeat_ms=500, election_timeout_ms=200)
    with pytest.raises(ConfigError, match="check_quorum"):
        NodeConfig(self_id="n0", peers=peers, store_dir=pathlib.Path("/s"), lease_read=True, check_quorum=False)
    with pytest.raises(ConfigError, match="tick_ms: True"):
        NodeConfig(self_id="n0", peers=peers, store_dir=pathlib.Path("/s"), tick_ms=True)
    config = NodeConfig(self_id="n0", peers=peers, store_dir=pathlib.Path("/s"))
    assert config.election_tick == 10 and config.heartbeat_tick == 2
    assert config.replace(self_id="n2").address == "127.0.0.1:40913"


def test_the_documented_list_of_quiet_rocketmq_keys_is_the_code_list() -> None:
    """docs/configuration.md lists every key accepted without a word, and only those."""
    docs = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    section = docs.split("The RocketMQ keys accepted without a word", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r"`([A-Za-z0-9]+)`", section))
    assert listed == set(ROCKETMQ_BROKER_KEYS)
    assert not listed & set(PROPERTY_KEYS)  # a key the node reads is never ignored
