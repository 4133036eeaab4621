"""The durable log: segment files, index files, recovery; LMDB hard state. Built by the storage issue."""
