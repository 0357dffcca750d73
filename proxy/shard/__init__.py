"""tierproxy shard: the PostgreSQL shard router's pure core (maps, keys, gather, hotkeys, console).

Nothing in this package does I/O: the daemon that will move bytes (on the shared PostgreSQL front
end) is not built yet. See docs/shard.md.
"""
