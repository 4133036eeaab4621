"""RocketMQ's protocols on top of the replicated message store (`dledger.broker_adapter`): `v5` is the 5.x
gRPC face (apache.rocketmq.v2 MessagingService); `remoting` is the 4.x remoting protocol (frame codec,
request and response codes, an asyncio transport); `namesrv` is the NameServer, RocketMQ's route registry;
`registrar` (and `registration`, its wiring to a broker replica) registers a replica with every NameServer.

Invariant: the store never imports this package; `remoting` and `namesrv` import nothing of the node, the
store or `v5`.
"""
