"""docs/security.md's certificate recipe, run as written: its node certificates carry a group over mutual TLS,
and its application certificate can call the client API but never speak as a peer."""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import subprocess

import grpc
import grpc.aio
import pytest

from dledger._proto import dledger_pb2 as pb
from dledger._proto import dledger_pb2_grpc as pb_grpc
from dledger.node.config import NodeConfig
from dledger.node.server import DLedgerServer
from tests.node.cluster_util import peers_for

pytestmark = pytest.mark.process

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "security.md"
MARK = "# dledger: certificate recipe"


def recipe() -> str:
    text = DOC.read_text()
    start = text.index(MARK)
    return text[start : text.index("```", start)]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_documented_recipe_makes_certificates_a_group_runs_on(tmp_path: pathlib.Path) -> None:
    subprocess.run(["bash", "-c", recipe()], cwd=tmp_path, check=True, timeout=120)
    peers = peers_for(["n0", "n1", "n2"])

    def config(node_id: str) -> NodeConfig:
        return NodeConfig(self_id=node_id, peers=peers, store_dir=tmp_path / "stores" / node_id, group="g",
                          tls_ca=tmp_path / "ca.pem", tls_cert=tmp_path / f"{node_id}.pem",
                          tls_key=tmp_path / f"{node_id}.key")  # fmt: skip

    async def main() -> None:
        servers = [DLedgerServer(config(i)) for i in peers]
        for s in servers:
            await s.start()
        try:
            assert all(s.config.peer_auth_mode == "tls" for s in servers)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not any(s.is_leader for s in servers):
                assert loop.time() < deadline, "no leader over the recipe's certificates"
                await asyncio.sleep(0.05)
            leader = next(s for s in servers if s.is_leader)
            index, _ = await leader.append([b"over the recipe"])
            while min(s.applied_index for s in servers) < index:
                assert loop.time() < deadline, "the followers did not apply"
                await asyncio.sleep(0.05)
            creds = grpc.ssl_channel_credentials(
                (tmp_path / "ca.pem").read_bytes(),
                (tmp_path / "app.key").read_bytes(),
                (tmp_path / "app.pem").read_bytes(),
            )
            async with grpc.aio.secure_channel(leader.config.address, creds) as channel:
                got = await pb_grpc.DLedgerClientServiceStub(channel).Get(
                    pb.GetRequest(group="g", index=index), timeout=5
                )
                assert got.entry.data == b"over the recipe"
                vote = pb.PeerMessage(group="g", from_id="n1", to_id=leader.config.self_id,
                                      request_vote=pb.RequestVote(term=10**6))  # fmt: skip
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await pb_grpc.RaftPeerStub(channel).Send(pb.PeerBatch(messages=[vote]), timeout=5)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert leader.is_leader
        finally:
            for s in servers:
                await s.stop(grace=0)

    asyncio.run(main())
