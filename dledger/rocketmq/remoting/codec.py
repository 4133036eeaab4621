"""The RocketMQ remoting frame codec (sans-I/O): `RemotingCommand` <-> bytes.

A frame, as RocketMQ's `RemotingCommand.encode` lays it out (all integers big-endian):

    int32  length          4 + header length + body length (not counting itself)
    int32  header word     serialize type << 24 | header length (24 bits)
    bytes  header          JSON, or the compact ROCKETMQ layout below
    bytes  body            the rest of the frame

The JSON header is the object fastjson writes for a command: `code`, `extFields` (a string map), `flag`,
`language` (a name such as "JAVA"), `opaque`, `remark` (absent when null), `serializeTypeCurrentRPC`,
`version`. The ROCKETMQ header (RocketMQ's `RocketMQSerializable`):

    int16 code | int8 language | int16 version | int32 opaque | int32 flag
    int32 remark length | remark (UTF-8) | int32 extFields length | extFields
    extFields: repeated (int16 key length | key | int32 value length | value), UTF-8

Invariants:
- `decode_command(encode_command(c)[4:]) == c` for every command the encoder accepts, except that a
  ROCKETMQ header cannot tell an empty remark from none (both decode as None) and a JSON header names the
  language, so a language number without a name decodes as OTHER.
- `RemotingCodecError` is the only error decoding raises, for any input bytes; its message is one line.
- `CommandDecoder` never buffers more than one frame of `max_frame` bytes: an oversize length is refused
  as soon as its 4 bytes arrive, and a decoder that failed stays failed.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

from dledger.net.framing import FrameDecoder, FrameError
from dledger.rocketmq.remoting import fastjson
from dledger.rocketmq.remoting.codes import LanguageCode, SerializeType
from dledger.rocketmq.remoting.command import INT32_MAX, INT32_MIN, RemotingCommand
from dledger.rocketmq.remoting.errors import RemotingCodecError

__all__ = [
    "DEFAULT_MAX_FRAME",
    "CommandDecoder",
    "decode_command",
    "decode_header",
    "encode_command",
    "encode_header",
]

#: RocketMQ's default `com.rocketmq.remoting.frameMaxLength`: 16 MiB
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
_MAX_HEADER = (1 << 24) - 1

_WORD = struct.Struct(">I")
_FIXED = struct.Struct(">hbhii")  # code, language, version, opaque, flag
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


# ---- encoding ----


def encode_command(cmd: RemotingCommand) -> bytes:
    """The whole frame, length word included."""
    header = encode_header(cmd)
    if len(header) > _MAX_HEADER:
        raise ValueError(f"a header of {len(header)} bytes does not fit the 24-bit header length")
    length = 4 + len(header) + len(cmd.body)
    if length > INT32_MAX:
        raise ValueError(f"a frame of {length} bytes does not fit the 32-bit length")
    return b"".join((_WORD.pack(length), _WORD.pack(int(cmd.serialize_type) << 24 | len(header)), header, cmd.body))


def encode_header(cmd: RemotingCommand) -> bytes:
    if cmd.serialize_type == SerializeType.ROCKETMQ:
        return _encode_rocketmq(cmd)
    return _encode_json(cmd)


_LANGUAGE_NAMES = {code.value: code.name for code in LanguageCode}
_SERIALIZE_NAMES = {kind.value: kind.name for kind in SerializeType}
# a command's keys are all text (`RemotingCommand` checks its ext_fields): the writer fastjson uses for them
_JSON_HEADER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _language_name(language: int) -> str:
    return _LANGUAGE_NAMES.get(language, LanguageCode.OTHER.name)


def _encode_json(cmd: RemotingCommand) -> bytes:
    obj: dict[str, Any] = {"code": cmd.code}
    if cmd.ext_fields:
        obj["extFields"] = dict(cmd.ext_fields)
    obj["flag"] = cmd.flag
    obj["language"] = _language_name(cmd.language)
    obj["opaque"] = cmd.opaque
    if cmd.remark is not None:
        obj["remark"] = cmd.remark
    obj["serializeTypeCurrentRPC"] = _SERIALIZE_NAMES[cmd.serialize_type]
    obj["version"] = cmd.version
    return _JSON_HEADER.encode(obj).encode("utf-8")


def _encode_rocketmq(cmd: RemotingCommand) -> bytes:
    for name in ("code", "version"):
        value = getattr(cmd, name)
        if not -(2**15) <= value < 2**15:
            raise ValueError(f"{name} {value} does not fit the ROCKETMQ header's 16 bits")
    remark = cmd.remark.encode("utf-8") if cmd.remark else b""
    ext = _encode_map(cmd.ext_fields)
    language = cmd.language if cmd.language < 128 else cmd.language - 256
    return b"".join(
        (
            _FIXED.pack(cmd.code, language, cmd.version, cmd.opaque, cmd.flag),
            _I32.pack(len(remark)),
            remark,
            _I32.pack(len(ext)),
            ext,
        )
    )


def _encode_map(fields: Mapping[str, str]) -> bytes:
    parts: list[bytes] = []
    for key, value in fields.items():
        k, v = key.encode("utf-8"), value.encode("utf-8")
        if len(k) >= 2**15:
            raise ValueError(f"an extFields key of {len(k)} bytes does not fit the 16-bit key length")
        parts += (_I16.pack(len(k)), k, _I32.pack(len(v)), v)
    return b"".join(parts)


# ---- decoding ----


def decode_command(payload: bytes) -> RemotingCommand:
    """A command from a frame's payload (everything after the length word)."""
    if len(payload) < 4:
        raise RemotingCodecError(f"a remoting frame of {len(payload)} bytes has no header length")
    (word,) = _WORD.unpack_from(payload)
    kind, header_len = word >> 24, word & _MAX_HEADER
    if header_len > len(payload) - 4:
        raise RemotingCodecError(f"header length {header_len} exceeds the frame's {len(payload) - 4} bytes")
    try:
        serialize_type = SerializeType(kind)
    except ValueError:
        raise RemotingCodecError(f"unknown header serialization type {kind}") from None
    header = payload[4 : 4 + header_len]
    return decode_header(header, serialize_type, payload[4 + header_len :])


def decode_header(header: bytes, serialize_type: SerializeType, body: bytes = b"") -> RemotingCommand:
    fields = _decode_rocketmq(header) if serialize_type == SerializeType.ROCKETMQ else _decode_json(header)
    try:
        return RemotingCommand(**fields, body=body, serialize_type=serialize_type)
    except (ValueError, TypeError) as exc:
        raise RemotingCodecError(f"bad remoting header: {exc}") from None


def _decode_rocketmq(header: bytes) -> dict[str, Any]:
    if len(header) < _FIXED.size + 8:
        raise RemotingCodecError(f"a ROCKETMQ header of {len(header)} bytes is shorter than its fixed part")
    code, language, version, opaque, flag = _FIXED.unpack_from(header)
    pos = _FIXED.size
    remark_bytes, pos = _sized(header, pos, _I32, "remark")
    ext_bytes, pos = _sized(header, pos, _I32, "extFields")
    ext: dict[str, str] = {}
    p = 0
    while p < len(ext_bytes):
        key, p = _sized(ext_bytes, p, _I16, "extFields key")
        value, p = _sized(ext_bytes, p, _I32, "extFields value")
        ext[_text(key, "extFields key")] = _text(value, "extFields value")
    return {
        "code": code,
        "language": language & 0xFF,
        "version": version,
        "opaque": opaque,
        "flag": flag,
        "remark": _text(remark_bytes, "remark") if remark_bytes else None,
        "ext_fields": ext,
    }


def _sized(data: bytes, pos: int, size: struct.Struct, what: str) -> tuple[bytes, int]:
    if pos + size.size > len(data):
        raise RemotingCodecError(f"the ROCKETMQ header ends inside the {what} length")
    (n,) = size.unpack_from(data, pos)
    pos += size.size
    if n < 0 or n > len(data) - pos:
        raise RemotingCodecError(f"{what} length {n} exceeds the {len(data) - pos} bytes left in the header")
    return data[pos : pos + n], pos + n


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise RemotingCodecError(f"the {what} is not UTF-8") from None


def _decode_json(header: bytes) -> dict[str, Any]:
    try:
        obj = fastjson.loads(header)
    except (ValueError, RecursionError) as exc:
        raise RemotingCodecError(f"the JSON header does not parse: {_one_line(exc)}") from None
    if not isinstance(obj, dict):
        raise RemotingCodecError("the JSON header is not an object")
    return {
        "code": _int_field(obj, "code"),
        "language": _language(obj.get("language")),
        "version": _int_field(obj, "version"),
        "opaque": _int_field(obj, "opaque"),
        "flag": _int_field(obj, "flag"),
        "remark": _remark(obj.get("remark")),
        "ext_fields": _ext_fields(obj.get("extFields")),
    }


def _one_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _int_field(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise RemotingCodecError(f"the JSON header's {name} is not an integer: {str(value)[:40]!r}")
    if not INT32_MIN <= value <= INT32_MAX:
        raise RemotingCodecError(f"the JSON header's {name} {value} does not fit a 32-bit int")
    return value


def _language(value: Any) -> int:
    if value is None:
        return LanguageCode.JAVA
    if isinstance(value, str):
        try:
            return LanguageCode[value].value
        except KeyError:
            return LanguageCode.OTHER.value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return value
    raise RemotingCodecError(f"the JSON header's language is not a language: {str(value)[:40]!r}")


def _remark(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise RemotingCodecError("the JSON header's remark is not a string")


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _ext_fields(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RemotingCodecError("the JSON header's extFields is not an object")
    for v in value.values():
        if type(v) is not str:
            return {k: v if type(v) is str else _scalar_text(v) for k, v in value.items() if v is not None}
    return value  # JSON object keys are text: every client's header as it is


class CommandDecoder:
    """Splits a byte stream into commands; `feed` raises `RemotingCodecError` on the first bad frame."""

    __slots__ = ("_error", "_frames")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._frames = FrameDecoder(max_frame, min_frame=4)
        self._error: RemotingCodecError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> list[RemotingCommand]:
        if self._error is not None:
            raise self._error
        try:
            payloads = self._frames.feed(data)
        except FrameError as exc:
            self._error = RemotingCodecError(str(exc))
            raise self._error from None
        commands: list[RemotingCommand] = []
        for payload in payloads:
            try:
                commands.append(decode_command(payload))
            except RemotingCodecError as exc:
                self._error = exc
                raise
        return commands
