"""The example broker.conf files in conf/dledger/ load as they ship and describe one local group of three.

Each file is read the way `dledger broker` reads it: `NodeConfig.from_file` with the broker's and the
endpoint's keys as known keys (so nothing is ignored or misspelled), then `EndpointConfig` and
`StoreOptions`. Their paths start with `~`, so `HOME` points at a temp dir holding the peer secret that
the README's commands make there. (tests/test_docs.py starts the group from these files.)
"""

from __future__ import annotations

import logging
import pathlib

import pytest

from dledger.broker_adapter.options import BROKER_KEYS, StoreOptions
from dledger.node.config import NodeConfig, load_properties, parse_address
from dledger.rocketmq.broker.config import RemotingConfig
from dledger.rocketmq.v5.config import ENDPOINT_KEYS, EndpointConfig

CONF = pathlib.Path(__file__).resolve().parent.parent / "conf" / "dledger"
FILES = sorted(CONF.glob("broker-n*.conf"))
SECRET = b"the-group-secret-of-the-examples"


@pytest.fixture
def home(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "dledger-group").mkdir()
    (tmp_path / "dledger-group" / "peer.secret").write_bytes(SECRET + b"\n")
    return tmp_path


def load(path: pathlib.Path) -> tuple[NodeConfig, EndpointConfig, StoreOptions]:
    node = NodeConfig.from_file(path, other_keys=[*BROKER_KEYS, *ENDPOINT_KEYS])
    props = load_properties(path)
    return node, EndpointConfig.from_properties(props, node), StoreOptions.from_properties(props)


def test_three_replica_files_ship() -> None:
    assert [p.name for p in FILES] == ["broker-n0.conf", "broker-n1.conf", "broker-n2.conf"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_each_file_loads_without_unknown_keys(
    path: pathlib.Path, home: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        node, endpoint, _ = load(path)
    assert not [r for r in caplog.records if "unknown" in r.getMessage()]
    assert node.self_id == path.stem.removeprefix("broker-")
    assert node.store_dir == home / "dledger-group" / node.self_id  # `~` is the user's home
    assert node.peer_secret == SECRET and node.peer_auth_mode == "secret"  # see docs/security.md
    assert endpoint.port == int(load_properties(path)["grpcServerPort"])


def test_the_files_form_one_group(home: pathlib.Path) -> None:
    loaded = [load(p) for p in FILES]
    nodes = [n for n, _, _ in loaded]
    endpoints = [e for _, e, _ in loaded]
    assert len({n.group for n in nodes}) == 1
    listen = [RemotingConfig.from_properties(load_properties(p)).listen_port for p in FILES]
    assert len(set(listen)) == 3  # the replicas share a host: each its own remoting port
    assert all(n.peers == nodes[0].peers for n in nodes)
    assert sorted(n.self_id for n in nodes) == sorted(nodes[0].peers)  # one file per peer, no peer without one
    assert len({n.store_dir for n in nodes}) == 3
    assert len({n.flush for n in nodes}) == 1
    assert all(e.endpoints == endpoints[0].endpoints for e in endpoints)
    assert len({e.broker_name for e in endpoints}) == 1
    # every port on the host is used once: three dLedger peer ports and three RocketMQ endpoints
    ports = [parse_address(a)[1] for a in nodes[0].peers.values()]
    ports += [parse_address(a)[1] for a in endpoints[0].endpoints.values()]
    assert len(set(ports)) == 6


def test_a_missing_secret_file_is_one_clear_error(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/dledger-group/peer.secret yet
    with pytest.raises(ValueError, match="dLegerPeerSecretFile"):
        load(FILES[0])
