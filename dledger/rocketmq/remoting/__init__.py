"""RocketMQ's remoting protocol (the 4.x wire protocol of brokers, NameServers and their clients).

`codes`: request, response and language codes by RocketMQ's numbers. `command`: `RemotingCommand`, one
request or response. `codec`: the frame codec, sans-I/O (`encode_command`, `decode_command`,
`CommandDecoder`). `fastjson`: JSON in the dialect RocketMQ's fastjson writes. `transport`: an asyncio
connection, server and client. `errors`: the layer's errors.
"""

from dledger.rocketmq.remoting.codec import (
    DEFAULT_MAX_FRAME,
    CommandDecoder,
    decode_command,
    encode_command,
)
from dledger.rocketmq.remoting.codes import (
    FLAG_ONEWAY,
    FLAG_RESPONSE,
    LanguageCode,
    RequestCode,
    ResponseCode,
    SerializeType,
    code_name,
)
from dledger.rocketmq.remoting.command import RemotingCommand
from dledger.rocketmq.remoting.errors import (
    RemotingCodecError,
    RemotingConnectionError,
    RemotingError,
    RemotingTimeoutError,
)
from dledger.rocketmq.remoting.transport import RemotingConnection, RemotingServer, RequestHandler, connect, invoke

__all__ = [
    "DEFAULT_MAX_FRAME",
    "FLAG_ONEWAY",
    "FLAG_RESPONSE",
    "CommandDecoder",
    "LanguageCode",
    "RemotingCodecError",
    "RemotingCommand",
    "RemotingConnection",
    "RemotingConnectionError",
    "RemotingError",
    "RemotingServer",
    "RemotingTimeoutError",
    "RequestCode",
    "RequestHandler",
    "ResponseCode",
    "SerializeType",
    "code_name",
    "connect",
    "decode_command",
    "encode_command",
    "invoke",
]
