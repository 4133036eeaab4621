"""Mutual TLS: certificates the test makes; a client outside the CA, or without TLS, is refused."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from dledger.server.aio_client import AsyncDLedgerClient
from dledger.server.client_policy import NotWrittenError
from dledger.server.config import ConfigError, NodeConfig
from dledger.server.server import DLedgerServer
from dledger.server.tls import TlsConfig
from tests.server.certs import Authority
from tests.server.cluster_util import peers_for


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
