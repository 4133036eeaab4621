"""RocketMQ's ACL 1.0 request signatures on the remoting protocol (sans-I/O).

A client with credentials adds `AccessKey` (and optionally `SecurityToken`) to a request's ext fields and
`Signature`: Base64 of HMAC-SHA1 with the secret key over the values of every other ext field, in the
order of their names, followed by the body (RocketMQ's `AclUtils.combineRequestContent`).

Invariant: `check` returns None only for a request signed with exactly these credentials; otherwise one
line saying what is wrong. Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

__all__ = ["RELAYED_BY", "check", "sign"]

RELAYED_BY = "_DLEDGER_FORWARDED"  # added by a follower that relays a request to its leader, after signing
_UNSIGNED = frozenset({"Signature", "_UNIQUE_KEY_QUERY", RELAYED_BY})


def sign(fields: Mapping[str, str], body: bytes, secret_key: str) -> str:
    content = "".join(fields[k] for k in sorted(fields) if k not in _UNSIGNED).encode() + bytes(body)
    return base64.b64encode(hmac.new(secret_key.encode(), content, hashlib.sha1).digest()).decode()


def check(fields: Mapping[str, str], body: bytes, access_key: str, secret_key: str) -> str | None:
    given = fields.get("AccessKey", "")
    if not given:
        return "the request is not signed (no AccessKey)"
    if not hmac.compare_digest(given.encode(), access_key.encode()):
        return "unknown AccessKey"
    signature = fields.get("Signature", "")
    if not signature or not hmac.compare_digest(signature.encode(), sign(fields, body, secret_key).encode()):
        return "the signature does not match"
    return None
