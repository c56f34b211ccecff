-- callgate: charge a call from its real billable seconds and release the rest of its reservation.
-- Idempotent by reservation id. Mirrors callgate.store.memory.MemoryStore.settle_now.
--
-- KEYS[1] reservation hash   KEYS[2] settled marker   KEYS[3] the countries the site has called
-- ARGV: billsec ('' when the call cannot be settled: charged in full), settled_memory (seconds), now_ms,
--       reservation id (the member of the concurrency sets), countries_ttl (seconds)
-- A phone's own call (origin 'dialled') answered (billsec > 0) teaches the site its country (the
-- reservation's 'country'): KEYS[3] gets it with the time (unix seconds); admit.lua counts it for
-- countries_ttl after that time, and the hash lives countries_ttl more (callgate.core.keys.COUNTRIES).
-- The cap and slot keys come from the reservation hash; they share the site's hash tag, so they live in
-- the same Redis Cluster slot as KEYS[1].
-- Returns {status, charged, released, billsec}

local done = redis.call('GET', KEYS[2])
if done then
  local c, r, b = string.match(done, '(%d+):(%d+):(%d+)')
  return {'already_settled', tonumber(c), tonumber(r), tonumber(b)}
end
local h = redis.call('HMGET', KEYS[1], 'allowed', 'cost', 'rate', 'increment', 'spend', 'slots', 'until',
  'country', 'origin')
if not h[7] or tonumber(h[7]) <= tonumber(ARGV[3]) then
  return {'unknown', 0, 0, 0} -- never admitted, or expired: its reservation stays charged in full
end
local allowed, cost, rate, inc = tonumber(h[1]), tonumber(h[2]), tonumber(h[3]), tonumber(h[4])
local call_id = ARGV[4]

local billsec = tonumber(ARGV[1])
local seconds, charged
if not billsec or billsec < 0 then
  -- cannot be settled: the whole reservation stays charged, only the concurrency slots are freed
  seconds, charged = allowed, cost
else
  if billsec > allowed then billsec = allowed end
  local q = math.floor(billsec / inc)
  while q * inc < billsec do q = q + 1 end
  seconds = q * inc
  charged = math.floor((rate * seconds + 59) / 60)
  while charged * 60 < rate * seconds do charged = charged + 1 end
  while (charged - 1) * 60 >= rate * seconds and charged > 0 do charged = charged - 1 end
  if charged > cost then charged = cost end
end
local released = cost - charged
-- a phone's own call, answered: the site knows the country now (never a leg no phone dialled: a
-- forward or transfer let through once must not open its country to every other such leg)
if billsec and billsec > 0 and h[8] and h[8] ~= '' and h[9] == 'dialled' then
  redis.call('HSET', KEYS[3], h[8], math.floor(tonumber(ARGV[3]) / 1000))
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[5]))
end

for key in string.gmatch(h[5] or '', '[^\n]+') do
  if redis.call('EXISTS', key) == 1 then redis.call('DECRBY', key, released) end
end
for key in string.gmatch(h[6] or '', '[^\n]+') do
  redis.call('ZREM', key, call_id)
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], charged .. ':' .. released .. ':' .. seconds, 'EX', tonumber(ARGV[2]))
return {'settled', charged, released, seconds}
