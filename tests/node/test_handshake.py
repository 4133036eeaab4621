"""The peer handshake, driven directly (sans-I/O): proofs, replays, reflections, malformed bytes."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dledger.net.handshake import NONCE_BYTES, Dialler, HandshakeError, Listener, refusal

SECRET = b"s" * 32
_counter = itertools.count()


def nonce() -> bytes:
    return next(_counter).to_bytes(NONCE_BYTES, "big")


def dialler(secret: bytes = SECRET, group: str = "g", self_id: str = "n1", peer_id: str = "n0") -> Dialler:
    return Dialler(secret, group, self_id, peer_id, nonce())


def listener(secret: bytes = SECRET, group: str = "g", self_id: str = "n0") -> Listener:
    return Listener(secret, group, self_id, nonce())


def run(d: Dialler, lis: Listener) -> list[bytes]:
    """One whole handshake; the messages in order."""
    hello = d.hello()
    challenge = lis.receive(hello)
    proof = d.receive(challenge)
    accept = lis.receive(proof)
    assert d.receive(accept) == b""
    return [hello, challenge, proof, accept]


def test_both_sides_authenticate_and_share_a_session() -> None:
    d, lis = dialler(), listener()
    run(d, lis)
    assert d.done and lis.done
    assert lis.peer_id == "n1"
    assert d.session == lis.session and len(d.session) == 32


def test_sessions_differ_between_handshakes() -> None:
    a, b = dialler(), dialler()
    la, lb = listener(), listener()
    run(a, la)
    run(b, lb)
    assert a.session != b.session


def test_a_wrong_secret_fails_on_both_sides_with_a_reason() -> None:
    d, lis = dialler(secret=b"w" * 32), listener()
    challenge = lis.receive(d.hello())
    with pytest.raises(HandshakeError, match="did not prove the group secret"):
        d.receive(challenge)  # the dialler checks the listener first: nothing of its own proof leaves
    assert not d.done and not lis.done


def test_a_dialler_without_the_secret_cannot_finish() -> None:
    lis = listener()
    challenge = lis.receive(dialler(secret=b"w" * 32).hello())
    forged = Dialler(b"w" * 32, "g", "n1", "n0", nonce())
    forged.hello()
    with pytest.raises(HandshakeError):
        forged.receive(challenge)
    with pytest.raises(HandshakeError):
        lis.receive(challenge[:6] + bytes([3]) + b"\0" * 32)  # a made-up PROOF
    assert not lis.done


def test_a_recorded_proof_is_refused_by_a_new_listener() -> None:
    recorded = run(dialler(), listener())
    fresh = listener()
    fresh.receive(recorded[0])  # the old HELLO: the listener answers with a new nonce
    with pytest.raises(HandshakeError, match="did not prove"):
        fresh.receive(recorded[2])  # the old PROOF covers the old nonce
    assert not fresh.done


def test_a_recorded_challenge_is_refused_by_a_new_dialler() -> None:
    recorded = run(dialler(), listener())
    fresh = dialler()
    fresh.hello()
    with pytest.raises(HandshakeError, match="did not prove"):
        fresh.receive(recorded[1])


def test_the_listener_proof_cannot_be_reflected_as_a_dialler_proof() -> None:
    d, lis = dialler(), listener()
    challenge = lis.receive(d.hello())
    reflected = challenge[:5] + bytes([3]) + challenge[6 + NONCE_BYTES :]  # its proof_l, sent back as a PROOF
    with pytest.raises(HandshakeError):
        lis.receive(reflected)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"group": "other"}, "group 'other' reached group 'g'"),
        ({"peer_id": "n9"}, "for 'n9' reached 'n0'"),
        ({"self_id": "n0"}, "own id"),
    ],
)
def test_the_listener_refuses_a_wrong_envelope(kwargs: dict[str, str], reason: str) -> None:
    with pytest.raises(HandshakeError, match=reason):
        listener().receive(dialler(**kwargs).hello())


def test_a_refusal_carries_its_reason_to_the_other_side() -> None:
    d = dialler()
    d.hello()
    with pytest.raises(HandshakeError, match="refused by the peer: authentication failed"):
        d.receive(refusal("authentication failed"))


def test_messages_out_of_turn_are_refused() -> None:
    d, lis = dialler(), listener()
    with pytest.raises(HandshakeError):
        d.receive(b"")  # before hello
    hello = d.hello()
    with pytest.raises(HandshakeError, match="out of turn"):
        lis.receive(hello[:5] + bytes([3]) + hello[6:])  # a PROOF where the HELLO belongs
    run(dialler(), lis2 := listener())
    with pytest.raises(HandshakeError):
        lis2.receive(hello)  # after the end


def test_a_version_mismatch_is_named() -> None:
    hello = bytearray(dialler().hello())
    hello[4] = 9
    with pytest.raises(HandshakeError, match="version 9"):
        listener().receive(bytes(hello))


def test_short_secrets_and_bad_nonces_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Dialler(b"short", "g", "a", "b", nonce())
    with pytest.raises(ValueError, match="nonce"):
        Listener(SECRET, "g", "a", b"x")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=120), min_size=1, max_size=4))
def test_random_bytes_only_ever_raise_handshake_errors(messages: list[bytes]) -> None:
    lis, d = listener(), dialler()
    d.hello()
    for side in (lis, d):
        for data in messages:
            try:
                side.receive(data)
            except HandshakeError:
                pass
    assert not lis.done and not d.done  # random bytes never authenticate anyone


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=255))
def test_any_flipped_byte_of_a_proof_is_refused(position: int, xor: int) -> None:
    d, lis = dialler(), listener()
    proof = bytearray(d.receive(lis.receive(d.hello())))
    position %= len(proof)
    proof[position] ^= xor or 1
    with pytest.raises(HandshakeError):
        lis.receive(bytes(proof))
