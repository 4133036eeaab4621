"""A replica's map of every replica's client endpoint: replicas sharing a host need `grpcEndpoints`."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from dledger.node.config import ConfigError, NodeConfig
from dledger.rocketmq.v5.config import EndpointConfig
from tests.support import ROOT

pytestmark = pytest.mark.process


def test_replicas_on_one_host_without_grpc_endpoints_are_refused(tmp_path: pathlib.Path) -> None:
    """Derived from grpcServerPort, every replica on the host would get this replica's port: a follower
    would forward writes to itself or to a replica that is not the master."""
    peers = {"n0": "127.0.0.1:40911", "n1": "127.0.0.1:40912", "n2": "10.0.0.3:40911"}
    node = NodeConfig(self_id="n0", peers=peers, store_dir=tmp_path, peer_secret=b"s" * 16)
    with pytest.raises(ConfigError, match=r"replicas n0, n1 share the host 127\.0\.0\.1.*grpcEndpoints="):
        EndpointConfig.from_properties({"grpcServerPort": "9000"}, node)
    given = EndpointConfig.from_properties(
        {"grpcEndpoints": "n0-127.0.0.1:9000;n1-127.0.0.1:9001;n2-10.0.0.3:9000", "grpcServerPort": "9000"}, node
    )
    assert given.endpoints["n1"] == "127.0.0.1:9001"


def test_broker_cli_refuses_an_ambiguous_map_in_one_line(tmp_path: pathlib.Path) -> None:
    conf = tmp_path / "broker.conf"
    conf.write_text(
        "dLegerGroup=broker-a\ndLegerSelfId=n0\ndLegerPeers=n0-127.0.0.1:40911;n1-127.0.0.1:40912\n"
        f"storePathRootDir={tmp_path}/s\ngrpcServerPort=8081\n"
    )
    run = subprocess.run([sys.executable, "-m", "dledger", "broker", "--config", str(conf)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2
    assert len(run.stderr.splitlines()) == 1 and "share the host 127.0.0.1" in run.stderr, run.stderr
