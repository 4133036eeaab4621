"""RocketMQ 5's request signature (MQv2-HMAC-SHA1), made and checked; shared by the gRPC endpoint and the admin RPC.

A signed request carries `x-mq-date-time: <UTC yyyyMMdd'T'HHmmss'Z'>` and `authorization: MQv2-HMAC-SHA1
Credential=<ak>, SignedHeaders=x-mq-date-time, Signature=<hex HMAC-SHA1(sk, x-mq-date-time)>`, as the official
clients send it. Invariant: `check_signature` answers None only for a request signed with exactly these
credentials; any other input (absent, malformed, wrong key) gives one line saying why, never an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["DATE_HEADER", "check_signature", "sign"]

DATE_HEADER = "x-mq-date-time"
_AUTH = re.compile(r"MQv2-HMAC-SHA1\s+Credential=([^,]*),\s*SignedHeaders=([^,]*),\s*Signature=([0-9A-Fa-f]+)")


def _hex(secret_key: str, date: str) -> str:
    return hmac.new(secret_key.encode(), date.encode(), hashlib.sha1).hexdigest()


def sign(access_key: str, secret_key: str, now: float | None = None) -> list[tuple[str, str]]:
    """The metadata pairs that sign a request with these credentials."""
    date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    auth = f"MQv2-HMAC-SHA1 Credential={access_key}, SignedHeaders={DATE_HEADER}, Signature={_hex(secret_key, date)}"
    return [(DATE_HEADER, date), ("authorization", auth)]


def check_signature(metadata: Iterable[tuple[str, Any]], access_key: str, secret_key: str) -> str | None:
    """None when the request is signed with these credentials; else why not. `metadata`: the call's pairs (an
    `authorization` that is not a signature, such as a bearer token beside it, is passed over)."""
    pairs = [(str(k).lower(), v) for k, v in metadata if isinstance(v, str)]
    match = next((m for k, v in pairs if k == "authorization" and (m := _AUTH.search(v))), None)
    if match is None:
        return "the request is not signed (no MQv2-HMAC-SHA1 authorization header)"
    credential, _, signature = match.groups()
    if not hmac.compare_digest(credential.strip().split("/")[0].encode(), access_key.encode()):
        return "unknown access key"
    date = next((v for k, v in pairs if k == DATE_HEADER), "")
    if not date or not hmac.compare_digest(signature.lower().encode(), _hex(secret_key, date).encode()):
        return "the signature does not match"
    return None
