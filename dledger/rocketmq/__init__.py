"""RocketMQ protocols on top of the replicated message store (`dledger.broker_adapter`): `v5` is the 5.x
gRPC face (apache.rocketmq.v2 MessagingService); `remoting` is the 4.x remoting protocol (frame codec,
request and response codes, an asyncio transport, message encodings and the broker's remoting face).

Invariant: the store never imports this package.
"""
