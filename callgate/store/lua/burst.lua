-- callgate: count one event in an extension's sliding window and lock the extension at a threshold.
-- Used by lockdown (denied attempts) and short_calls (answered calls shorter than a limit).
--
-- KEYS[1] the window (sorted set, member = call id, score = ms)   KEYS[2] the extension's lock
-- ARGV: member, now_ms, window (seconds), threshold, lock scope (international | all), report (0/1)
-- Returns {events in the window, 1 if this call set the lock, the lock now held ('' for none)}
local member, now, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local threshold, scope, report = tonumber(ARGV[4]), ARGV[5], ARGV[6] == '1'

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window * 1000)
redis.call('ZADD', KEYS[1], now, member)
redis.call('PEXPIRE', KEYS[1], window * 1000)
local count = redis.call('ZCARD', KEYS[1])
local held = redis.call('GET', KEYS[2]) or ''
local locked = 0
if count >= threshold and not report and held ~= 'all' and held ~= scope then
  redis.call('SET', KEYS[2], scope) -- no TTL: a lock holds until an admin lifts it
  held, locked = scope, 1
end
return {count, locked, held}
