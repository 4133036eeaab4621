"""Network pieces shared by the node, its transports and the clients; the protocol codecs are sans-I/O.

`handshake`: the peer handshake that proves both ends hold the group's secret.
`framing`: length-prefixed frames over a byte stream (the peer transport and RocketMQ's remoting protocol).
`addresses`: `host:port` and the peers string, as the node's configuration and the clients read them.
`tls`: TLS settings (PEM files) for the node's endpoint, its peer links and the clients.
`peer_frames`: what the TCP peer transport's frames carry (handshake, batches of peer messages, ACKs).
`connection`: the one I/O piece, a framed connection on an asyncio Protocol with back-pressure.
`writer`: a thread that makes a connection's big writes, so the kernel's share of a send runs beside the loop.
"""
