"""The broker's RocketMQ 4.x face: the remoting protocol's requests answered on the message store.

`face`: `RemotingBroker`, the listener and its dispatch table. Handlers by concern: `send` (sends, batches,
send-back), `pull` (pulls with long polling and filters), `offsets`, `consumers` (heartbeats, consumer
lists, queue locks), `transactions`, `admin` (lookups and administration). `context` is what they share,
`config` the broker.conf keys, `clients` the registry of connected clients, `batcher` the group commit of
concurrent sends, `storemap` the mapping between remoting messages and the store's model. The wire
protocol itself (codec, codes, transport, message encodings, signatures) is `dledger.rocketmq.remoting`.
"""
