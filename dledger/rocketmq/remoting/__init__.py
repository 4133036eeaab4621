"""RocketMQ's remoting protocol: message encodings (`msgformat`) and the broker's remoting face."""
