-- callgate: read every check of one call and, if the call fits under all of them, reserve it.
-- Mirrors callgate.core.admission.barred and judge, and callgate.store.memory.MemoryStore.admit_now; one round
-- trip per call.
--
-- KEYS[1] reservation hash   KEYS[2] the extension's lock   KEYS[3] the site's panic flag
-- KEYS[4] the countries the site has called (hash: country -> unix time; written by settle.lua)
-- KEYS[5..] one key per check, in the admission's order (every key is built by callgate.core.keys)
-- ARGV: call_id, now_ms, rate (micro/min), increment, max_seconds, hold, reserve (0/1), international (0/1),
--       peek (0/1), deadline (epoch ms on this server's clock, 0: none), then what the reservation records
--       of the live call: extension, number (E.164), channel, instance, origin, country (ISO, '' none);
--       then the country check (callgate.core.admission.CountryCheck: '', 'deny' or 'report') and how
--       long a learned country counts (seconds since its last answered dialled call: keys.COUNTRIES_TTL);
--       then per check: kind, limit, window (seconds), member
-- KEYS[1] is the reservation id (callgate.core.plan.reservation_id): it is bound to the number, the rate,
-- the extension and the channel, so an earlier reservation is only handed back to the same leg.
-- Returns {lock, panic, refused, failed, admitted, allowed_seconds, cost, replayed, learned, value1, ...}
--   refused: 'lock', 'panic', 'new_country' or '' (what refused the call before any counter)
--   learned: 1 when the country check found the country in KEYS[4], answered within the TTL (0 without)
--   failed: the index (from 0) of the first check the call does not fit under; -1: none
--   allowed_seconds: admitted, what was reserved; else what the counters allow (0 when a check failed)

local call_id, now = ARGV[1], tonumber(ARGV[2])
local rate, inc, max_seconds = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local hold, reserve, intl, peek = tonumber(ARGV[6]), ARGV[7] == '1', ARGV[8] == '1', ARGV[9] == '1'
local deadline = tonumber(ARGV[10])
local extension, number, channel, instance = ARGV[11], ARGV[12], ARGV[13], ARGV[14]
local origin, country, country_check = ARGV[15], ARGV[16], ARGV[17]
local countries_ttl = tonumber(ARGV[18])
local n = #KEYS - 4
local ARGS = 18 -- fixed arguments before the per-check ones
local FIRST = 4 -- KEYS before the per-check ones

local function idiv(a, b) -- exact floor(a / b) for non-negative integers held in doubles
  local q = math.floor(a / b)
  while q * b > a do q = q - 1 end
  while (q + 1) * b <= a do q = q + 1 end
  return q
end

local lock = redis.call('GET', KEYS[2]) or ''
local panic = redis.call('EXISTS', KEYS[3])
local learned = 0
if country_check ~= '' then -- each country counts for the TTL after its own last answered call
  local seen = tonumber(redis.call('HGET', KEYS[4], country) or '')
  if seen and seen * 1000 > now - countries_ttl * 1000 then learned = 1 end
end
local refused = '' -- callgate.core.admission.barred
if lock == 'all' or (intl and lock == 'international') then
  refused = 'lock'
elseif intl and panic == 1 then
  refused = 'panic'
elseif country_check == 'deny' and learned == 0 then -- callgate.core.admission.unknown_country
  refused = 'new_country'
end

local values = {}
for i = 1, n do
  local key, base = KEYS[i + FIRST], ARGS + (i - 1) * 4
  local kind, window = ARGV[base + 1], tonumber(ARGV[base + 3])
  local v
  if kind == 'spend' then
    v = tonumber(redis.call('GET', key) or '0')
  elseif kind == 'window' then
    if not peek then redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window * 1000) end
    v = redis.call('ZCOUNT', key, '(' .. (now - window * 1000), '+inf')
  elseif kind == 'distinct' then
    if not peek then redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window * 1000) end
    v = redis.call('ZCOUNT', key, '(' .. (now - window * 1000), '+inf')
    local seen = redis.call('ZSCORE', key, ARGV[base + 4])
    if seen and tonumber(seen) > now - window * 1000 then v = v - 1 end
  else -- concurrent: members scored by the expiry of their reservation
    if not peek then redis.call('ZREMRANGEBYSCORE', key, '-inf', now) end
    v = redis.call('ZCOUNT', key, '(' .. now, '+inf')
  end
  values[i] = v
end

local function reply(failed, admitted, allowed, cost, replayed)
  local out = {lock, panic, refused, failed, admitted, allowed, cost, replayed, learned}
  for i = 1, n do out[#out + 1] = values[i] end
  return out
end

if reserve and not peek then
  local held = redis.call('HMGET', KEYS[1], 'allowed', 'cost', 'until')
  if held[3] and tonumber(held[3]) > now then
    return reply(-1, 1, tonumber(held[1]), tonumber(held[2]), 1) -- not judged again
  end
end

-- judge
local ceiling = idiv(max_seconds, inc) * inc
local allowed, failed = ceiling, -1
for i = 1, n do
  local base = ARGS + (i - 1) * 4
  local kind, limit = ARGV[base + 1], tonumber(ARGV[base + 2])
  if kind == 'spend' then
    local fit = ceiling
    if rate > 0 then
      local remaining = limit - values[i]
      if remaining < 0 then remaining = 0 end
      fit = idiv(math.min(idiv(remaining * 60, rate), ceiling), inc) * inc
    end
    if fit < inc and failed < 0 then failed = i - 1 end
    if fit < allowed then allowed = fit end
  elseif values[i] >= limit and failed < 0 then
    failed = i - 1
  end
end
if failed >= 0 or allowed < inc then allowed = 0 end

if peek or not reserve or refused ~= '' or allowed == 0 then
  return reply(failed, 0, allowed, 0, 0)
end
if deadline > 0 then -- the gate has given up on this script and decided without it: reserve nothing
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > deadline then
    return reply(failed, 0, allowed, 0, 0)
  end
end

-- reserve
local cost = idiv(rate * allowed + 59, 60)
local untl = now + (allowed + hold) * 1000
local spend_keys, slot_keys = {}, {}
for i = 1, n do
  local key, base = KEYS[i + FIRST], ARGS + (i - 1) * 4
  local kind, window = ARGV[base + 1], tonumber(ARGV[base + 3])
  if kind == 'spend' then
    redis.call('INCRBY', key, cost)
    redis.call('EXPIRE', key, window)
    spend_keys[#spend_keys + 1] = key
  elseif kind == 'window' then
    redis.call('ZADD', key, now, call_id)
    redis.call('PEXPIRE', key, window * 1000)
  elseif kind == 'distinct' then
    redis.call('ZADD', key, now, ARGV[base + 4])
    redis.call('PEXPIRE', key, window * 1000)
  else
    redis.call('ZADD', key, untl, call_id)
    if redis.call('PTTL', key) < (allowed + hold) * 1000 then
      redis.call('PEXPIRE', key, (allowed + hold) * 1000)
    end
    slot_keys[#slot_keys + 1] = key
  end
end
-- the fields are callgate.core.keys.RESERVATION_FIELDS
redis.call('HSET', KEYS[1], 'allowed', allowed, 'cost', cost, 'rate', rate, 'increment', inc,
  'until', untl, 'spend', table.concat(spend_keys, '\n'), 'slots', table.concat(slot_keys, '\n'),
  'extension', extension, 'number', number, 'international', intl and 1 or 0, 'channel', channel,
  'admitted_at', ARGV[2], 'instance', instance, 'origin', origin, 'country', country)
redis.call('PEXPIRE', KEYS[1], (allowed + hold) * 1000)
return reply(-1, 1, allowed, cost, 0)
