"""RocketMQ protocols on top of the replicated message store (`dledger.broker_adapter`): `v5` is the 5.x
gRPC face (apache.rocketmq.v2 MessagingService).

Invariant: the store never imports this package.
"""
