"""The node runtime (driver, gRPC transport, services, client). Built by the node-runtime issue."""
