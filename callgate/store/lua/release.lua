-- callgate: free the concurrency slots of a call whose gated channel hung up, before its settlement.
-- Mirrors callgate.store.memory.MemoryStore.release_now.
--
-- KEYS[1] reservation hash
-- ARGV: now_ms, reservation id (the member of the concurrency sets), the channel that hung up
-- Only the channel the reservation was admitted for frees its slots (the reservation's 'channel'); the
-- money stays reserved until the call's settlement (its CDR) or the reservation's expiry. The slot keys
-- come from the reservation hash and share the site's hash tag (same Redis Cluster slot as KEYS[1]).
-- Returns 1 when slots were freed, 0 otherwise (unknown, expired, another channel, already freed).

local h = redis.call('HMGET', KEYS[1], 'slots', 'until', 'channel')
if not h[2] or tonumber(h[2]) <= tonumber(ARGV[1]) or h[3] ~= ARGV[3] or ARGV[3] == '' then
  return 0
end
if not h[1] or h[1] == '' then
  return 0
end
for key in string.gmatch(h[1], '[^\n]+') do
  redis.call('ZREM', key, ARGV[2])
end
redis.call('HSET', KEYS[1], 'slots', '')
return 1
