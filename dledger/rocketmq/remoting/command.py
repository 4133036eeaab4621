"""`RemotingCommand`: one RocketMQ remoting request or response, as a frozen value.

A command is what RocketMQ's `RemotingCommand` carries on the wire: `code` (a request code, or a response
code in a response), the sender's `language`, `version`, `opaque` (the request id a response echoes),
`flag` (bit 0 response, bit 1 oneway), `remark`, `ext_fields` (the custom header: a string map) and `body`.
`serialize_type` is how its header is (or will be) serialized; a response uses the request's. A response
carries language JAVA and version 0, as RocketMQ's own servers answer.

Invariants: `code`, `version` and `opaque`, `flag` fit Java's int (the ROCKETMQ header narrows `code` and
`version` to a short: the codec checks that when it encodes); `ext_fields` maps str to str.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from dledger.rocketmq.remoting.codes import FLAG_ONEWAY, FLAG_RESPONSE, LanguageCode, SerializeType

__all__ = ["INT32_MAX", "INT32_MIN", "RemotingCommand"]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class RemotingCommand:
    """One remoting command; build requests with `request`, their answers with `response_to`."""

    code: int
    language: int = LanguageCode.JAVA
    version: int = 0
    opaque: int = 0
    flag: int = 0
    remark: str | None = None
    ext_fields: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    serialize_type: SerializeType = SerializeType.JSON

    def __post_init__(self) -> None:
        for name in ("code", "version", "opaque", "flag"):
            value = getattr(self, name)
            if not INT32_MIN <= value <= INT32_MAX:
                raise ValueError(f"{name} {value} does not fit a 32-bit int")
        if not 0 <= self.language <= 255:
            raise ValueError(f"language {self.language} does not fit a byte")
        for key, value in self.ext_fields.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"ext_fields must map str to str, got {key!r}: {value!r}")

    @classmethod
    def request(
        cls,
        code: int,
        ext_fields: Mapping[str, str] | None = None,
        body: bytes = b"",
        *,
        opaque: int = 0,
        oneway: bool = False,
        version: int = 0,
        language: int = LanguageCode.JAVA,
        serialize_type: SerializeType = SerializeType.JSON,
    ) -> RemotingCommand:
        """A request; a connection that sends it assigns the opaque when it is 0."""
        return cls(
            code,
            language=language,
            version=version,
            opaque=opaque,
            flag=FLAG_ONEWAY if oneway else 0,
            ext_fields=dict(ext_fields or {}),
            body=body,
            serialize_type=serialize_type,
        )

    def response_to(
        self,
        code: int,
        remark: str | None = None,
        ext_fields: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> RemotingCommand:
        """The response to this request: its opaque, its header serialization, the response flag."""
        return RemotingCommand(
            code,
            language=LanguageCode.JAVA,
            opaque=self.opaque,
            flag=FLAG_RESPONSE,
            remark=remark,
            ext_fields=dict(ext_fields or {}),
            body=body,
            serialize_type=self.serialize_type,
        )

    @property
    def is_response(self) -> bool:
        return bool(self.flag & FLAG_RESPONSE)

    @property
    def is_oneway(self) -> bool:
        return bool(self.flag & FLAG_ONEWAY)

    def with_opaque(self, opaque: int) -> RemotingCommand:
        return replace(self, opaque=opaque)

    def ext(self, name: str, default: str | None = None) -> str | None:
        """One custom-header field (`ext_fields[name]`), or `default`."""
        return self.ext_fields.get(name, default)
