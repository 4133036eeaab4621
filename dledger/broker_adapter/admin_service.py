"""The broker admin RPC: `/dledger.admin.v1.BrokerAdmin/Call`, JSON in and out, beside the MessagingService.

One unary method whose request and response are UTF-8 JSON objects (`admin_ops.py` lists the operations), so
it needs no generated code on either side. A request on a replica that is not the master answers `NOT_MASTER`
with `leader` (the master's endpoint, when known), and the client calls it there (`dledger admin` does); a read
that says `any_replica` is answered by any replica from its applied state.

Authorization follows the client API's grants (`dledgerClientGrantsFile`, see `dledger/server/client_auth.py`):
when they are on, a read needs the `read` right and a write the `admin` right, from a bearer token in the
call's `authorization` metadata; otherwise the call is refused with UNAUTHENTICATED or PERMISSION_DENIED.

With the broker's `accessKey` / `secretKey` set, every call must also carry RocketMQ 5's MQv2-HMAC-SHA1 signature
with them (`signature.py`, as the gRPC clients sign); without it the call is refused with UNAUTHENTICATED and one
line saying why, before the request is read.

Invariants: a request that is not a JSON object of at most `MAX_REQUEST_BYTES` is answered BAD_REQUEST, never
with an exception; every answer is one JSON object.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
import grpc.aio

from dledger.broker_adapter.admin_ops import WRITES, run_op
from dledger.broker_adapter.signature import check_signature
from dledger.broker_adapter.store import MessageStore
from dledger.node.client_auth import ClientGrants

__all__ = ["ADMIN_METHOD", "ADMIN_SERVICE", "MAX_REQUEST_BYTES", "AdminService"]

ADMIN_SERVICE = "dledger.admin.v1.BrokerAdmin"
ADMIN_METHOD = f"/{ADMIN_SERVICE}/Call"
MAX_REQUEST_BYTES = 64 << 10

log = logging.getLogger(__name__)


def _identity(raw: bytes) -> bytes:
    return raw


class AdminService:
    """Serves the admin method for one replica's store; `endpoints` maps node ids to their endpoints;
    `credentials`: the broker's (accessKey, secretKey), when it has them."""

    def __init__(
        self,
        store: MessageStore,
        endpoints: dict[str, str],
        grants: ClientGrants | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.store = store
        self.endpoints = endpoints
        self.grants = grants
        self.credentials = credentials

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.unary_unary_rpc_method_handler(
            self.call, request_deserializer=_identity, response_serializer=_identity
        )
        return grpc.method_handlers_generic_handler(ADMIN_SERVICE, {"Call": method})

    async def call(self, raw: bytes, context: Any) -> bytes:
        answer = await self._answer(raw, context)
        return json.dumps(answer, separators=(",", ":")).encode()

    async def _answer(self, raw: bytes, context: Any) -> dict[str, Any]:
        if self.credentials is not None:
            why = check_signature(context.invocation_metadata() or (), *self.credentials)
            if why is not None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"the broker's accessKey is required: {why}")
        if len(raw) > MAX_REQUEST_BYTES:
            return {"ok": False, "code": "BAD_REQUEST", "error": f"the request is over {MAX_REQUEST_BYTES} bytes"}
        try:
            req = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return {"ok": False, "code": "BAD_REQUEST", "error": f"the request is not JSON: {exc}"}
        if self.grants is not None:
            op = req.get("op") if isinstance(req, dict) else None
            right = "admin" if op in WRITES else "read"
            rights = self.grants.rights(context.invocation_metadata(), context.auth_context)
            if rights is None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no known client credential (a token)")
            elif right not in rights:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{op} needs the {right!r} right")
        try:
            answer = await run_op(self.store, req)
        except Exception as exc:  # a bug must not kill the call without an answer
            log.exception("admin request failed")
            return {"ok": False, "code": "INTERNAL", "error": f"internal error: {exc!r}"}
        if answer.get("code") == "NOT_MASTER":
            server = self.store.server
            leader = server.leader_id if server is not None else None
            if leader:
                answer["leader"] = self.endpoints.get(leader, "")
        return answer
