"""Network protocol pieces shared by the node's transports, written sans-I/O (bytes in, bytes out).

`handshake`: the peer handshake that proves both ends hold the group's secret.
`framing`: length-prefixed frames over a byte stream (the peer transport and RocketMQ's remoting protocol).
`addresses`: `host:port` and the peers string, as the node's configuration and the clients read them.
`tls`: TLS settings (PEM files) for the node's endpoint, its peer links and the clients.
"""
