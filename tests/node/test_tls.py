"""Mutual TLS: certificates the test makes; a client outside the CA, or without TLS, is refused."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from dledger.client.aio_client import AsyncDLedgerClient
from dledger.client.client_policy import NotWrittenError
from dledger.net.tls import TlsConfig
from dledger.node.config import ConfigError, NodeConfig
from dledger.node.server import DLedgerServer
from tests.node.certs import Authority
from tests.node.cluster_util import peers_for


def test_mutual_tls_admits_only_certificates_of_the_ca(tmp_path: pathlib.Path) -> None:
    ca = Authority.create(tmp_path, "ca")
    rogue = Authority.create(tmp_path, "rogue")
    node_cert = ca.issue(tmp_path, "n0")
    good = ca.issue(tmp_path, "client")
    bad = rogue.issue(tmp_path, "mallory")
    config = NodeConfig(self_id="n0", peers=peers_for(["n0"]), store_dir=tmp_path / "n0", tls_ca=ca.cert,
                        tls_cert=node_cert.cert, tls_key=node_cert.key)  # fmt: skip

    async def main() -> None:
        server = DLedgerServer(config)
        await server.start()
        try:
            await server.wait_for_leader()
            trusted = TlsConfig(ca=ca.cert, cert=good.cert, key=good.key)
            async with AsyncDLedgerClient(config.peers, tls=trusted) as client:
                result = await client.append(b"secret")
                assert (await client.get(result.index)).data == b"secret"
            outsiders = [
                TlsConfig(ca=ca.cert, cert=bad.cert, key=bad.key),  # certificate from another CA
                TlsConfig(ca=ca.cert),  # no client certificate at all
                None,  # plaintext
            ]
            for tls in outsiders:
                async with AsyncDLedgerClient(config.peers, tls=tls, timeout=0.5) as client:
                    with pytest.raises(NotWrittenError):
                        await client.append(b"intruder")
            assert server.status().last_index == result.index  # nothing more was written
        finally:
            await server.stop()

    asyncio.run(main())


def test_tls_settings_are_validated(tmp_path: pathlib.Path) -> None:
    peers = peers_for(["n0"])
    with pytest.raises(ConfigError, match="together"):
        NodeConfig(self_id="n0", peers=peers, store_dir=tmp_path, tls_ca=tmp_path / "ca.pem")
    (tmp_path / "junk.pem").write_text("not a certificate")
    bad = NodeConfig(self_id="n0", peers=peers, store_dir=tmp_path, tls_ca=tmp_path / "junk.pem",
                     tls_cert=tmp_path / "junk.pem", tls_key=tmp_path / "missing.key")  # fmt: skip
    assert bad.tls is not None
    with pytest.raises(ConfigError, match=r"missing\.key"):
        bad.tls.server_credentials()
    with pytest.raises(ConfigError, match="not a PEM"):
        TlsConfig(ca=tmp_path / "junk.pem").channel_credentials()


def test_a_group_replicates_over_mutual_tls_and_refuses_a_foreign_node(tmp_path: pathlib.Path) -> None:
    ca = Authority.create(tmp_path, "ca")
    rogue_ca = Authority.create(tmp_path, "rogue")
    peers = peers_for(["n0", "n1", "n2"])

    def config(node_id: str, authority: Authority, trust: pathlib.Path) -> NodeConfig:
        issued = authority.issue(tmp_path, f"{node_id}-{authority.name}", uris=[f"dledger://default/{node_id}"])
        return NodeConfig(self_id=node_id, peers=peers, store_dir=tmp_path / f"{node_id}-{authority.name}",
                          tls_ca=trust, tls_cert=issued.cert, tls_key=issued.key)  # fmt: skip

    async def main() -> None:
        # n2 has a certificate from another CA: the others must refuse its connections (and it theirs)
        servers = [DLedgerServer(config("n0", ca, ca.cert)), DLedgerServer(config("n1", ca, ca.cert)),
                   DLedgerServer(config("n2", rogue_ca, rogue_ca.cert))]  # fmt: skip
        for s in servers:
            await s.start()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while not any(s.is_leader for s in servers[:2]):
                assert loop.time() < deadline, "n0 and n1 elected no leader over TLS"
                await asyncio.sleep(0.02)
            leader = next(s for s in servers[:2] if s.is_leader)
            index, _ = await leader.append([b"over tls"])
            follower = next(s for s in servers[:2] if s is not leader)
            while follower.applied_index < index:
                assert loop.time() < deadline, "the follower did not apply over TLS"
                await asyncio.sleep(0.02)
            assert servers[2].applied_index < index  # the foreign node never got the entry
            assert servers[2].node.node_status().role != "leader"
        finally:
            for s in servers:
                await s.stop(grace=0)

    asyncio.run(main())
