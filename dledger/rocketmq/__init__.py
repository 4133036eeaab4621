"""RocketMQ's own protocols, spoken by dledger's NameServer and broker.

`remoting`: the RocketMQ 4.x remoting protocol (frame codec, request and response codes, an asyncio
transport). `namesrv`: the NameServer, RocketMQ's route registry. `registrar`: a broker replica registering
itself with every NameServer.
"""
