"""The shared PostgreSQL front end: what `tierproxy dbproxy` and `tierproxy shard` both need."""
