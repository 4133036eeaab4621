"""The remoting layer's errors, one name per meaning.

`RemotingCodecError`: the peer's bytes are not a RocketMQ remoting command (a frame out of bounds, a header
that does not parse); the connection is closed. `RemotingConnectionError`: the connection failed or closed
before a response came. `RemotingTimeoutError`: no response within the caller's timeout. Every message is
one line, safe to log.
"""

from __future__ import annotations

__all__ = ["RemotingCodecError", "RemotingConnectionError", "RemotingError", "RemotingTimeoutError"]


class RemotingError(Exception):
    """Base of the remoting layer's errors."""


class RemotingCodecError(RemotingError):
    """Bytes that are not a well-formed remoting command; the stream cannot be trusted any further."""


class RemotingConnectionError(RemotingError):
    """The connection could not be made, or was lost before a response arrived."""


class RemotingTimeoutError(RemotingError):
    """No response arrived within the timeout."""
