"""Attacks on the peer port of real node processes, with nothing but the published protos.

Each one worked against a group whose peers took any sender: a term of 2^64-1 fenced every node for good,
a made-up leader's entries were committed, its heartbeats stalled writes, and a bare InstallSnapshot made
followers discard their log. With the group secret (what `dledger cluster` and the launcher set up) none is
accepted; without authentication the checks that do not depend on it still stop the term bomb and the bare
InstallSnapshot.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator

import grpc
import pytest

from dledger._proto import dledger_pb2 as pb
from dledger._proto import dledger_pb2_grpc as pb_grpc
from dledger.client.client import NodeInfo
from dledger.node.codec import pack_entries
from dledger.storage_api import Entry, EntryKind
from tests.node.procs import ProcessGroup
from tests.support import wait_for

pytestmark = pytest.mark.process

EVIL = b"attacker's bytes"


def _running(root: pathlib.Path, secret: bool) -> Iterator[ProcessGroup]:
    group = ProcessGroup(root, flush="sync")
    group.peer_secret = secret  # the launcher makes the group a secret unless told not to
    group.start_all()
    try:
        group.wait_for_leader(timeout=30)
        yield group
    finally:
        group.stop_all()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessGroup]:
    yield from _running(tmp_path_factory.mktemp("secured"), secret=True)


@pytest.fixture(scope="module")
def open_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessGroup]:
    yield from _running(tmp_path_factory.mktemp("open"), secret=False)


def _send(address: str, messages: list[pb.PeerMessage]) -> grpc.StatusCode:
    """One forged batch, as an outsider sends it: the status it got (OK: the node took it)."""
    with grpc.insecure_channel(address) as channel:
        try:
            pb_grpc.RaftPeerStub(channel).Send(pb.PeerBatch(messages=messages), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _heartbeat(group: ProcessGroup, to_id: str, term: int, **fields: object) -> pb.PeerMessage:
    return pb.PeerMessage(
        group=group.group, from_id="evil", to_id=to_id, append_entries=pb.AppendEntries(term=term, **fields)
    )


def _all_healthy(group: ProcessGroup) -> dict[str, NodeInfo] | None:
    """Every node's status, once each answers and is healthy (not fenced); None before."""
    statuses = group.statuses()
    return statuses if all(s.reachable and s.healthy for s in statuses.values()) else None


def _appends_work(group: ProcessGroup, n: int = 5) -> list[int]:
    with group.client() as client:
        return [client.append(f"ok {k}".encode()).index for k in range(n)]


def test_a_term_bomb_is_refused_and_every_node_keeps_serving(secured: ProcessGroup, open_group: ProcessGroup) -> None:
    for group, refused in ((secured, grpc.StatusCode.UNAUTHENTICATED), (open_group, grpc.StatusCode.OK)):
        before = wait_for(lambda g=group: _all_healthy(g), 20, "every node healthy")
        for node_id, address in group.peers.items():
            # without authentication the batch is taken by the transport, and dropped by the codec
            assert _send(address, [_heartbeat(group, node_id, 2**64 - 1)]) == refused
        _appends_work(group)  # the group still commits
        after = wait_for(lambda g=group: _all_healthy(g), 20, "every node healthy")
        for node_id, status in after.items():
            assert status.term <= before[node_id].term + 2, f"{node_id} took the forged term: {status}"


def test_forged_entries_are_never_committed(secured: ProcessGroup) -> None:
    status = secured.statuses()
    term = max(s.term for s in status.values()) + 1
    for node_id, address in secured.peers.items():
        last = status[node_id].last_index
        last_term = status[node_id].term
        heads, data = pack_entries([Entry(last + 1, term, EVIL, EntryKind.NORMAL)])
        forged = _heartbeat(
            secured,
            node_id,
            term,
            prev_log_index=last,
            prev_log_term=last_term,
            leader_commit=last + 1,
            entry_heads=heads,
            entry_data=data,
        )
        assert _send(address, [forged]) == grpc.StatusCode.UNAUTHENTICATED
    indexes = _appends_work(secured)
    with secured.client() as client:
        for index in range(1, indexes[-1] + 1):
            assert client.get(index).data != EVIL


def test_a_stranger_s_heartbeats_do_not_move_leadership(secured: ProcessGroup) -> None:
    leader = secured.wait_for_leader()
    term = secured.statuses()[leader].term
    for _ in range(10):
        for node_id, address in secured.peers.items():
            _send(address, [_heartbeat(secured, node_id, term + 1)])
        time.sleep(0.05)
    assert secured.wait_for_leader() == leader
    assert {s.term for s in wait_for(lambda: _all_healthy(secured), 20, "statuses").values()} == {term}
    assert len(_appends_work(secured, 20)) == 20


def test_a_bare_install_snapshot_wipes_no_replica(secured: ProcessGroup, open_group: ProcessGroup) -> None:
    for group, refused in ((secured, grpc.StatusCode.UNAUTHENTICATED), (open_group, grpc.StatusCode.PERMISSION_DENIED)):
        indexes = _appends_work(group, 10)
        leader = group.wait_for_leader()
        last = indexes[-1]
        wait_for(lambda g=group, i=last: all(s.last_index >= i for s in g.statuses().values()), 20, "replication")
        term = group.statuses()[leader].term
        for node_id, address in group.peers.items():
            if node_id == leader:
                continue
            install = pb.PeerMessage(
                group=group.group,
                from_id=leader,  # even in the leader's name
                to_id=node_id,
                install_snapshot=pb.InstallSnapshot(term=term, last_included_index=10**9, last_included_term=term),
            )
            assert _send(address, [install]) == refused
        for node_id, status in wait_for(lambda g=group: _all_healthy(g), 20, "every node healthy").items():
            assert status.first_index <= 1 and status.last_index >= indexes[-1], f"{node_id} lost its log: {status}"
        with group.client() as client:
            assert [client.get(i).data for i in indexes] == [f"ok {k}".encode() for k in range(10)]


def test_snapshot_chunks_from_an_outsider_are_refused(secured: ProcessGroup) -> None:
    node_id, address = next(iter(secured.peers.items()))
    chunk = pb.SnapshotChunk(group=secured.group, from_id="evil", to_id=node_id, term=1, last_included_index=10**6,
                             total_size=4, offset=0, data=b"junk", done=True)  # fmt: skip
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.RaftPeerStub(channel).SendSnapshotChunk(chunk, timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_malformed_peer_calls_log_one_line_not_a_traceback(secured: ProcessGroup) -> None:
    node_id, address = next(iter(secured.peers.items()))
    with grpc.insecure_channel(address) as channel:
        send = channel.unary_unary("/dledger.v1.RaftPeer/Send")
        for _ in range(3):
            with pytest.raises(grpc.RpcError):
                send(b"\xff\xff\xff\xff", timeout=5)
    text = wait_for(lambda: "malformed request" in secured.log_text(node_id) and secured.log_text(node_id), 10)
    assert "Traceback" not in text
    assert "refused a malformed request to /dledger.v1.RaftPeer/Send" in text


def test_a_node_with_the_wrong_secret_cannot_join_and_both_sides_say_why(tmp_path: pathlib.Path) -> None:
    group = ProcessGroup(tmp_path)
    group.peer_secret = False  # each node is given its own file below
    right, wrong = tmp_path / "right.secret", tmp_path / "wrong.secret"
    right.write_text("r" * 32)
    wrong.write_text("w" * 32)
    command = group.command

    def with_secret(node_id: str) -> list[str]:
        return [*command(node_id), "--peer-secret-file", str(wrong if node_id == "n2" else right)]

    group.command = with_secret  # type: ignore[method-assign]
    group.start_all()
    try:
        leader = group.wait_for_leader(timeout=30)
        assert leader != "n2"
        indexes = _appends_work(group, 3)
        wait_for(lambda: "did not prove the group secret" in group.log_text("n2"), 20, "n2 saying why")
        wait_for(lambda: "did not prove the group secret" in group.log_text(leader), 20, f"{leader} saying why")
        status = group.statuses()["n2"]
        assert status.last_index < indexes[-1] and status.role != "leader"
        for node_id in group.peers:
            assert "Traceback" not in group.log_text(node_id)
    finally:
        group.stop_all()


def test_under_mutual_tls_a_client_certificate_cannot_speak_as_a_peer(tmp_path: pathlib.Path) -> None:
    from tests.node.certs import Authority

    ca = Authority.create(tmp_path, "ca")
    group = ProcessGroup(tmp_path)
    group.peer_secret = False  # TLS mode: the certificates name the nodes
    certs = {i: ca.issue(tmp_path, i, uris=[f"dledger://{group.group}/{i}"]) for i in group.peers}
    app = ca.issue(tmp_path, "app")  # a legitimate client certificate of the same CA
    command = group.command

    def with_tls(node_id: str) -> list[str]:
        tls = ["--tls-ca", str(ca.cert), "--tls-cert", str(certs[node_id].cert), "--tls-key", str(certs[node_id].key)]
        return [*command(node_id), *tls]

    group.command = with_tls  # type: ignore[method-assign]
    group.start_all()
    try:
        creds = grpc.ssl_channel_credentials(ca.cert.read_bytes(), app.key.read_bytes(), app.cert.read_bytes())
        client_tls = {"ca": ca.cert, "cert": app.cert, "key": app.key}
        from dledger.net.tls import TlsConfig

        def leader() -> str | None:
            with group.client(tls=TlsConfig(**client_tls)) as client:
                leaders = [s.id for s in client.status(timeout=1) if s.reachable and s.role == "leader"]
            return leaders[0] if len(leaders) == 1 else None

        lead = wait_for(leader, 30, "a leader over mutual TLS", poll=0.1)
        with group.client(tls=TlsConfig(**client_tls)) as client:
            status = {s.id: s for s in client.status(timeout=2)}
            index = client.append(b"legit").index
        for node_id, address in group.peers.items():
            if node_id == lead:
                continue
            last = status[node_id].last_index
            heads, data = pack_entries([Entry(last + 1, status[lead].term + 1, EVIL, EntryKind.NORMAL)])
            forged = pb.PeerMessage(group=group.group, from_id=lead, to_id=node_id, append_entries=pb.AppendEntries(
                term=status[lead].term + 1, prev_log_index=last, prev_log_term=status[node_id].term,
                leader_commit=last + 1, entry_heads=heads, entry_data=data))  # fmt: skip
            with grpc.secure_channel(address, creds) as channel, pytest.raises(grpc.RpcError) as caught:
                pb_grpc.RaftPeerStub(channel).Send(pb.PeerBatch(messages=[forged]), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with group.client(tls=TlsConfig(**client_tls)) as client:
            assert client.get(index).data == b"legit"
            assert all(client.get(i).data != EVIL for i in range(1, index + 1))
        assert leader() == lead
    finally:
        group.stop_all()


def test_a_node_without_the_secret_is_told_what_it_lacks(tmp_path: pathlib.Path) -> None:
    group = ProcessGroup(tmp_path)  # the launcher gives n0 and n1 the group's secret
    command = group.command

    def without_secret_for_n2(node_id: str) -> list[str]:
        args = command(node_id)
        if node_id == "n2":
            at = args.index("--peer-secret-file")
            del args[at : at + 2]
        return args

    group.command = without_secret_for_n2  # type: ignore[method-assign]
    group.start_all()
    try:
        assert group.wait_for_leader(timeout=30) != "n2"
        _appends_work(group, 1)
        wait_for(lambda: "wants peers to authenticate" in group.log_text("n2"), 20, "n2 saying what it lacks")
        assert group.log_text("n2").count("wants peers to authenticate") <= 2  # once per link, not per retry
    finally:
        group.stop_all()
