"""The counter store: the Protocol and its values, the in-memory store (replay, explain) and the
Redis store with its Lua scripts."""
