"""`AdminClient`: calls the broker admin RPC (`admin_service.py`) of a broker group, following the master.

A request answered `NOT_MASTER` is sent again to the `leader` the
answer names (or to the next replica), until one answers or the deadline passes, so elections and a killed
master are ridden out. Invariant: `call` returns the answer object of one replica, or raises `AdminCallError`
with one line saying why no replica answered (`AdminRefused` when a replica refused the credentials).
`credentials` (accessKey, secretKey) sign every call as RocketMQ 5 clients do (`signature.py`), afresh per call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import grpc

from dledger.broker_adapter.admin_service import ADMIN_METHOD
from dledger.broker_adapter.signature import sign

__all__ = ["AdminCallError", "AdminClient", "AdminRefused"]


class AdminCallError(Exception):
    """No replica gave an answer (unreachable, refused credentials, or the deadline passed)."""


class AdminRefused(AdminCallError):
    """A replica refused the call's credentials (a token or the accessKey signature)."""


def _identity(raw: bytes) -> bytes:
    return raw


class AdminClient:
    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        token: str | None = None,
        timeout: float = 10.0,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("no endpoints")
        self.endpoints = list(endpoints)
        self.token = token
        self.credentials = credentials
        self.timeout = timeout
        self._channels: dict[str, grpc.Channel] = {}

    def _stub(self, address: str) -> Any:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.insecure_channel(address)
        return channel.unary_unary(ADMIN_METHOD, request_serializer=_identity, response_deserializer=_identity)

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """The answer object (`{"ok": ...}`) of the replica that took the request."""
        body = json.dumps(request).encode()
        metadata = [("authorization", f"Bearer {self.token}")] if self.token else []
        if self.credentials is not None:
            metadata += sign(*self.credentials)
        deadline = time.monotonic() + self.timeout
        order = list(self.endpoints)
        last = "no replica answered"
        attempt = 0
        hint: str | None = None  # the master a replica named: tried next
        while True:
            if hint is not None:
                address, hint = hint, None
            else:
                address = order[attempt % len(order)]
                attempt += 1
            left = deadline - time.monotonic()
            try:
                raw = self._stub(address)(body, metadata=metadata, timeout=max(min(left, 5.0), 0.2))
                answer = json.loads(raw)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise AdminRefused(f"{address}: {exc.details()}") from None
                last = f"{address}: {code.name if code else exc}"
            except ValueError:
                last = f"{address}: the answer is not JSON"
            else:
                if not isinstance(answer, dict):
                    last = f"{address}: the answer is not a JSON object"
                elif answer.get("code") != "NOT_MASTER":
                    return answer
                else:
                    last = f"{address}: {answer.get('error', 'not the master')}"
                    leader = answer.get("leader")
                    if isinstance(leader, str) and leader and leader != address:
                        hint = leader
            if time.monotonic() >= deadline:
                raise AdminCallError(last)
            if hint is None and attempt % len(order) == 0:
                time.sleep(0.2)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
