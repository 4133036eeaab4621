"""RocketMQ's protocols on the broker store: the remoting protocol (`remoting`) for 4.x clients and tools."""
