"""The sans-I/O Raft core. Built by the raft-core issue; imports nothing that does I/O."""
