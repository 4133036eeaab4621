"""Client API authorization (optional, off by default): which caller may read, append, or administer.

A grants file names credentials and their rights, one per line (`#` starts a comment):

    # rights        credential
    read            token:3b5f...      a bearer token: the call's metadata `authorization: Bearer 3b5f...`
    read,append     token:9c01...
    admin           cert:ops           a client certificate (mutual TLS) whose CN or URI SAN is `ops`
    all             cert:n0            every right

Rights: `read` (Get, ReadIndex, Status, Members), `append` (Append, AppendStream), `admin`
(TransferLeadership, ChangeMembership, Compact); `all` is every right. A client-service method not in
that table needs `admin`.

Invariants: with grants, every call of the client service is checked before its handler runs; a caller
that presents no known credential gets UNAUTHENTICATED and one without the right PERMISSION_DENIED, and
reaches nothing; tokens are kept and compared only as SHA-256 digests; the peer service (which
authenticates on its own, see peer_auth) and the health service are not affected. A malformed grants
file is a `ConfigError` naming the file and the line.
"""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from dledger.node.config import ConfigError

__all__ = ["CLIENT_SERVICE", "RIGHTS", "ClientAuthInterceptor", "ClientGrants", "right_of"]

CLIENT_SERVICE = "/dledger.v1.DLedgerClientService/"
RIGHTS = ("read", "append", "admin")
_METHOD_RIGHTS = {
    "Get": "read",
    "ReadIndex": "read",
    "Status": "read",
    "Members": "read",
    "Append": "append",
    "AppendStream": "append",
}
_MIN_TOKEN = 16


def right_of(method: str) -> str | None:
    """The right a full method name needs (None: not a client-service method, not checked here)."""
    if not method.startswith(CLIENT_SERVICE):
        return None
    return _METHOD_RIGHTS.get(method[len(CLIENT_SERVICE) :], "admin")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class ClientGrants:
    """Rights by token digest and by certificate name."""

    tokens: Mapping[bytes, frozenset[str]]
    certs: Mapping[str, frozenset[str]]

    @classmethod
    def load(cls, path: str | pathlib.Path) -> ClientGrants:
        try:
            text = pathlib.Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"client grants: cannot read {str(path)!r}: {exc}") from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, name: str = "client grants") -> ClientGrants:
        tokens: dict[bytes, frozenset[str]] = {}
        certs: dict[str, frozenset[str]] = {}
        for lineno, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{name} line {lineno}"
            parts = line.split()
            if len(parts) != 2:
                raise ConfigError(f"{where}: expected 'RIGHTS token:SECRET' or 'RIGHTS cert:NAME'")
            rights_text, credential = parts
            rights = set(rights_text.split(","))
            if "all" in rights:
                rights = (rights - {"all"}) | set(RIGHTS)
            unknown = sorted(rights - set(RIGHTS))
            if unknown:
                raise ConfigError(f"{where}: unknown right {unknown[0]!r} (read, append, admin or all)")
            kind, sep, value = credential.partition(":")
            if not sep or not value or kind not in ("token", "cert"):
                raise ConfigError(f"{where}: the credential must be token:SECRET or cert:NAME")
            if kind == "token":
                if len(value) < _MIN_TOKEN:
                    raise ConfigError(f"{where}: a token needs at least {_MIN_TOKEN} characters")
                tokens[_digest(value)] = frozenset(rights)
            else:
                certs[value] = frozenset(rights)
        if not tokens and not certs:
            raise ConfigError(f"{name}: grants nothing (an empty grants file would refuse every client)")
        return cls(tokens, certs)

    def rights(self, metadata: Any, auth_context: Callable[[], Mapping[str, Any]] | None) -> frozenset[str] | None:
        """The rights of a caller (None: no known credential). `auth_context` is asked only when the
        metadata carries no known token."""
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                found = self.tokens.get(_digest(value[len("Bearer ") :].strip()))
                if found is not None:
                    return found
        if auth_context is None or not self.certs:
            return None
        auth = auth_context()
        names = [*auth.get("x509_common_name", []), *auth.get("peer_uri", [])]
        granted = [self.certs[n.decode(errors="replace")] for n in names if n.decode(errors="replace") in self.certs]
        return frozenset().union(*granted) if granted else None


class ClientAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc's base is untyped
    """Checks each client-service call against `ClientGrants` before its handler runs."""

    def __init__(self, grants: ClientGrants) -> None:
        self.grants = grants
        self.refused = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        right = right_of(details.method)
        if right is None or handler is None:
            return handler
        by_token = self.grants.rights(details.invocation_metadata, None)
        if by_token is not None and right in by_token:
            return handler  # the common case: no wrapper, no per-call cost beyond one digest
        return self._guarded(handler, right, details.method)

    def _refusal(self, context: grpc.aio.ServicerContext[Any, Any], right: str, method: str) -> tuple[Any, str] | None:
        rights = self.grants.rights(context.invocation_metadata(), context.auth_context)
        if rights is not None and right in rights:
            return None
        self.refused += 1
        if rights is None:
            return grpc.StatusCode.UNAUTHENTICATED, "no known client credential (a token or client certificate)"
        return grpc.StatusCode.PERMISSION_DENIED, f"{method.rpartition('/')[2]} needs the {right!r} right"

    def _guarded(self, handler: grpc.RpcMethodHandler, right: str, method: str) -> grpc.RpcMethodHandler:
        refusal = self._refusal
        codecs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if not handler.response_streaming:
            inner = handler.unary_unary or handler.stream_unary

            async def unary_response(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                refused = refusal(context, right, method)
                if refused is not None:
                    await context.abort(*refused)
                return await inner(request, context)

            make = (
                grpc.stream_unary_rpc_method_handler
                if handler.request_streaming
                else grpc.unary_unary_rpc_method_handler
            )
            return make(unary_response, **codecs)
        inner_stream = handler.stream_stream or handler.unary_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            refused = refusal(context, right, method)
            if refused is not None:
                await context.abort(*refused)
            async for response in inner_stream(request, context):
                yield response

        make = (
            grpc.stream_stream_rpc_method_handler if handler.request_streaming else grpc.unary_stream_rpc_method_handler
        )
        return make(streaming, **codecs)
