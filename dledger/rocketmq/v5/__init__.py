"""The RocketMQ 5.x gRPC face: `service` (the MessagingService servicer, importing its handlers at the top),
`receive`, `offsets`, `telemetry`, `topics` (handlers; `topics` also the topic type checks, routes'
permissions and recall), `convert` (messages to and from the proto), `support` (shared
helpers), `codes` (status codes), `config` (the endpoint keys of broker.conf).
"""
