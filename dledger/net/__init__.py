"""Network protocol pieces shared by the node's transports, sans-I/O (bytes in, bytes out) but `connection`.

`handshake`: the peer handshake that proves both ends hold the group's secret.
`framing`: length-prefixed frames over a byte stream (the peer transport and RocketMQ's remoting protocol).
`peer_frames`: what the TCP peer transport's frames carry (handshake, batches of peer messages, ACKs).
`connection`: the one I/O piece, a framed connection on an asyncio Protocol with back-pressure.
"""
