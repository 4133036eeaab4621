"""Client API authorization: tokens and client certificates grant read, append or admin; nothing else passes."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from dledger._proto import dledger_pb2 as pb
from dledger._proto import dledger_pb2_grpc as pb_grpc
from dledger.node.client_auth import ClientGrants, right_of
from dledger.node.config import ConfigError, NodeConfig
from dledger.node.server import DLedgerServer
from tests.node.certs import Authority
from tests.node.cluster_util import peers_for

READER, WRITER, ADMIN = "r" * 20, "w" * 20, "a" * 20
GRANTS = f"""
# rights      credential
read          token:{READER}
append        token:{WRITER}   # may append, not read
all           token:{ADMIN}
read,admin    cert:ops
"""


@contextlib.asynccontextmanager
async def _serving(config: NodeConfig) -> AsyncIterator[DLedgerServer]:
    """A started single-node server that has elected itself, stopped afterwards."""
    server = DLedgerServer(config)
    await server.start()
    try:
        await server.wait_for_leader()
        yield server
    finally:
        await server.stop()


def _md(token: str | None) -> tuple[tuple[str, str], ...]:
    return () if token is None else (("authorization", f"Bearer {token}"),)


async def _status(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_each_right_opens_only_its_methods(tmp_path: pathlib.Path) -> None:
    grants = tmp_path / "grants"
    grants.write_text(GRANTS)
    config = NodeConfig(self_id="n0", peers=peers_for(["n0"]), store_dir=tmp_path / "n0", client_grants=grants)

    async def main() -> None:
        async with _serving(config) as server:
            async with grpc.aio.insecure_channel(config.address) as channel:
                stub = pb_grpc.DLedgerClientServiceStub(channel)
                append = pb.AppendRequest(group="default", data=[b"x"])
                get = pb.GetRequest(group="default", index=1)
                compact = pb.CompactRequest(group="default")
                expect = {
                    (None, "append"): grpc.StatusCode.UNAUTHENTICATED,
                    ("nope" * 5, "append"): grpc.StatusCode.UNAUTHENTICATED,
                    (READER, "append"): grpc.StatusCode.PERMISSION_DENIED,
                    (WRITER, "append"): grpc.StatusCode.OK,
                    (WRITER, "get"): grpc.StatusCode.PERMISSION_DENIED,
                    (READER, "get"): grpc.StatusCode.OK,
                    (READER, "compact"): grpc.StatusCode.PERMISSION_DENIED,
                    (WRITER, "compact"): grpc.StatusCode.PERMISSION_DENIED,
                    (ADMIN, "compact"): grpc.StatusCode.OK,
                }
                calls = {"append": (stub.Append, append), "get": (stub.Get, get), "compact": (stub.Compact, compact)}
                for (token, what), code in expect.items():
                    method, request = calls[what]
                    assert await _status(method(request, metadata=_md(token), timeout=5)) == code, (token, what)

                async def one() -> AsyncIterator[pb.AppendStreamRequest]:
                    yield pb.AppendStreamRequest(
                        requests=[pb.AppendRequest(group="default", data=[b"s"], request_id=1)]
                    )

                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    async for _ in stub.AppendStream(one(), metadata=_md(READER), timeout=5):
                        pass
                assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
                answers = [r async for r in stub.AppendStream(one(), metadata=_md(WRITER), timeout=5)]
                assert answers[0].responses[0].status == pb.STATUS_OK
            assert server.status().last_index == 3  # the no-op, the writer's append and its stream append

    asyncio.run(main())


def test_a_client_certificate_grants_by_its_name(tmp_path: pathlib.Path) -> None:
    ca = Authority.create(tmp_path, "ca")
    node = ca.issue(tmp_path, "n0", uris=["dledger://default/n0"])
    ops, app = ca.issue(tmp_path, "ops"), ca.issue(tmp_path, "app")
    grants = tmp_path / "grants"
    grants.write_text(GRANTS)
    config = NodeConfig(self_id="n0", peers=peers_for(["n0"]), store_dir=tmp_path / "n0", client_grants=grants,
                        tls_ca=ca.cert, tls_cert=node.cert, tls_key=node.key)  # fmt: skip

    async def call(issued: object, request: pb.CompactRequest) -> grpc.StatusCode:
        creds = grpc.ssl_channel_credentials(ca.cert.read_bytes(), issued.key.read_bytes(), issued.cert.read_bytes())  # type: ignore[attr-defined]
        async with grpc.aio.secure_channel(config.address, creds) as channel:
            return await _status(pb_grpc.DLedgerClientServiceStub(channel).Compact(request, timeout=5))

    async def main() -> None:
        async with _serving(config):
            request = pb.CompactRequest(group="default")
            assert await call(ops, request) == grpc.StatusCode.OK
            assert await call(app, request) == grpc.StatusCode.UNAUTHENTICATED  # signed by the CA, granted nothing

    asyncio.run(main())


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("read", "expected 'RIGHTS token:SECRET'"),
        ("write token:" + "x" * 20, "unknown right 'write'"),
        ("read token:short", "at least 16"),
        ("read password:" + "x" * 20, "token:SECRET or cert:NAME"),
        ("# nothing\n", "grants nothing"),
    ],
)
def test_a_malformed_grants_file_names_the_line(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        ClientGrants.parse(text, "grants")


def test_a_missing_grants_file_fails_before_the_node_opens_its_store(tmp_path: pathlib.Path) -> None:
    config = NodeConfig(self_id="n0", peers=peers_for(["n0"]), store_dir=tmp_path / "n0", client_grants=tmp_path / "x")
    with pytest.raises(ConfigError, match="cannot read"):
        DLedgerServer(config)
    assert not (tmp_path / "n0").exists()


def test_methods_map_to_rights() -> None:
    assert right_of("/dledger.v1.DLedgerClientService/Append") == "append"
    assert right_of("/dledger.v1.DLedgerClientService/Status") == "read"
    assert right_of("/dledger.v1.DLedgerClientService/ChangeMembership") == "admin"
    assert right_of("/dledger.v1.DLedgerClientService/SomethingNew") == "admin"  # fail closed
    assert right_of("/dledger.v1.RaftPeer/Stream") is None  # peers authenticate on their own


def test_both_clients_carry_their_token(tmp_path: pathlib.Path) -> None:
    from dledger.client.aio_client import AsyncDLedgerClient
    from dledger.client.client import DLedgerClient
    from dledger.client.client_policy import InvalidRequestError

    grants = tmp_path / "grants"
    grants.write_text(GRANTS)
    config = NodeConfig(self_id="n0", peers=peers_for(["n0"]), store_dir=tmp_path / "n0", client_grants=grants)

    async def main() -> None:
        async with _serving(config):
            async with AsyncDLedgerClient(config.peers, token=WRITER) as writer:
                index = (await writer.append(b"streamed")).index  # over the append stream
            async with AsyncDLedgerClient(config.peers, token=READER, streaming=False) as reader:
                assert (await reader.get(index)).data == b"streamed"
                with pytest.raises(InvalidRequestError, match="not allowed"):
                    await reader.append(b"no")

            def blocking() -> None:
                with DLedgerClient(config.peers, token=ADMIN) as admin:
                    assert admin.get(admin.append(b"sync").index).data == b"sync"
                with DLedgerClient(config.peers) as anonymous, pytest.raises(InvalidRequestError):
                    anonymous.append(b"no")

            await asyncio.get_running_loop().run_in_executor(None, blocking)

    asyncio.run(main())


@pytest.mark.process
def test_the_cli_takes_a_token_file(tmp_path: pathlib.Path) -> None:
    import subprocess
    import sys

    grants = tmp_path / "grants"
    grants.write_text(GRANTS)
    token = tmp_path / "token"
    token.write_text(WRITER + "\n")
    config = NodeConfig(self_id="n0", peers=peers_for(["n0"]), store_dir=tmp_path / "n0", client_grants=grants)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        base = [sys.executable, "-m", "dledger", "append", "--peers", f"n0-{config.address}", *args, "hello"]
        return subprocess.run(base, capture_output=True, text=True, timeout=60)

    async def main() -> None:
        async with _serving(config):
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(None, cli, "--token-file", str(token))
            assert ok.returncode == 0, ok.stderr
            refused = await loop.run_in_executor(None, cli)
            assert refused.returncode != 0 and "not allowed" in refused.stderr
            missing = await loop.run_in_executor(None, cli, "--token-file", str(tmp_path / "nope"))
            assert missing.returncode == 2 and "--token-file: cannot read" in missing.stderr
            assert "Traceback" not in refused.stderr + missing.stderr

    asyncio.run(main())
