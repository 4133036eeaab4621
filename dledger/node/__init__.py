"""The node runtime: the driver of the Raft core (`node`, with `node_members` and `node_snapshots`), what it
does with its stores before it starts (`startup`), the peer transport and its wire codec (`transport`,
`codec`), the gRPC services and server (`services`, `server`), its configuration (`config`, `config_keys`),
peer and client authentication, metrics, snapshot transfer, process tuning (`tuning`) and its errors
(`errors`).

Invariant: it imports nothing of the CLI, the message store or the RocketMQ protocols.
"""
