"""Generated protobuf and gRPC code for protos/dledger.proto. Do not edit: run scripts/gen_proto.py."""
