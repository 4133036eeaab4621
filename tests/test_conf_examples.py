"""The example broker.conf files load as they ship: conf/dledger/ describes one local group of three, and
conf/2g-3r/ one cluster of two groups of three (broker-a, broker-b) registering with one NameServer.

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
from dledger.rocketmq.broker.config import REMOTING_KEYS, RemotingConfig
from dledger.rocketmq.registrar import REGISTRAR_KEYS, RegistrarConfig
from dledger.rocketmq.v5.config import ENDPOINT_KEYS, EndpointConfig

CONF = pathlib.Path(__file__).resolve().parent.parent / "conf" / "dledger"
FILES = sorted(CONF.glob("broker-n*.conf"))
SECRET = b"the-group-secret-of-the-examples"
CLUSTER_CONF = CONF.parent / "2g-3r"
CLUSTER_FILES = sorted(CLUSTER_CONF.glob("broker-*.conf"))
GROUPS = ("broker-a", "broker-b")


@pytest.fixture
def home(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "dledger-group").mkdir()
    (tmp_path / "dledger-group" / "peer.secret").write_bytes(SECRET + b"\n")
    return tmp_path


def load(path: pathlib.Path) -> tuple[NodeConfig, EndpointConfig, StoreOptions]:
    node = NodeConfig.from_file(path, other_keys=[*BROKER_KEYS, *ENDPOINT_KEYS, *REMOTING_KEYS])
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
    remoting = [RemotingConfig.from_properties(load_properties(p)) for p in FILES]
    assert len({r.listen_port for r in remoting}) == 3  # the replicas share a host: each its own remoting port
    # every file names every replica's remoting address (where a follower relays writes), its own included
    assert {r.address for r in remoting} == set(remoting[0].remoting_peers.values())
    assert all(r.remoting_peers == remoting[0].remoting_peers for r in remoting)
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


@pytest.fixture
def cluster_home(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    for group in GROUPS:
        (tmp_path / "dledger-cluster" / group).mkdir(parents=True)
        (tmp_path / "dledger-cluster" / group / "peer.secret").write_bytes(SECRET + group.encode() + b"\n")
    return tmp_path


def load_replica(path: pathlib.Path) -> tuple[NodeConfig, EndpointConfig, RegistrarConfig]:
    """A file of conf/2g-3r/ read as `dledger broker` reads it, registrar keys included."""
    node = NodeConfig.from_file(path, other_keys=[*BROKER_KEYS, *ENDPOINT_KEYS, *REGISTRAR_KEYS, *REMOTING_KEYS])
    props = load_properties(path)
    endpoint = EndpointConfig.from_properties(props, node)
    host = parse_address(node.peers[node.self_id])[0]
    registrar = RegistrarConfig.from_properties(props, broker_name=endpoint.broker_name, default_host=host)
    assert registrar is not None, f"{path.name}: no namesrvAddr"
    return node, endpoint, registrar


def test_two_groups_of_three_ship() -> None:
    assert [p.name for p in CLUSTER_FILES] == [f"{g}-n{i}.conf" for g in GROUPS for i in range(3)]


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_each_cluster_file_loads_without_unknown_keys(
    path: pathlib.Path, cluster_home: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        node, endpoint, registrar = load_replica(path)
    assert not [r for r in caplog.records if "unknown" in r.getMessage()]
    group, _, self_id = path.stem.rpartition("-")
    assert (node.group, node.self_id, endpoint.broker_name) == (group, self_id, group)
    assert node.store_dir == cluster_home / "dledger-cluster" / group / self_id
    assert node.peer_secret == SECRET + group.encode()  # each group its own secret
    assert endpoint.port == int(load_properties(path)["grpcServerPort"])
    assert registrar.namesrv_addrs == ("127.0.0.1:9876",)
    assert registrar.broker_addr == f"127.0.0.1:{load_properties(path)['listenPort']}"


def test_the_cluster_files_form_two_groups_of_one_cluster(cluster_home: pathlib.Path) -> None:
    loaded = {p.name: load_replica(p) for p in CLUSTER_FILES}
    assert {r.cluster for _, _, r in loaded.values()} == {"RaftCluster"}
    for group in GROUPS:
        members = [v for name, v in loaded.items() if name.startswith(group + "-")]
        nodes = [n for n, _, _ in members]
        assert all(n.peers == nodes[0].peers for n in nodes)
        assert sorted(n.self_id for n in nodes) == sorted(nodes[0].peers)  # one file per peer
        assert all(e.endpoints == members[0][1].endpoints for _, e, _ in members)
        assert sorted(members[0][1].endpoints) == sorted(nodes[0].peers)  # a gRPC endpoint per replica
    # the six replicas share a host: no port is used twice, across groups and kinds
    ports: list[int] = []
    for group in GROUPS:
        node, endpoint, _ = next(v for name, v in loaded.items() if name.startswith(group + "-"))
        ports += [parse_address(a)[1] for a in node.peers.values()]
        ports += [parse_address(a)[1] for a in endpoint.endpoints.values()]
    ports += [parse_address(r.broker_addr)[1] for _, _, r in loaded.values()]
    ports.append(9876)
    assert len(ports) == 6 + 6 + 6 + 1 and len(set(ports)) == len(ports)
    assert len({n.store_dir for n, _, _ in loaded.values()}) == 6
