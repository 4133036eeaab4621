"""A RocketMQ-style message store on the replicated log. Built by the broker-adapter issue."""
