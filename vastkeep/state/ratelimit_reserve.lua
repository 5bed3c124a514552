-- Reserve the next call slot of one (endpoint, key) pair, atomically, for every worker on every host.
-- KEYS[1] slot key: the "next allowed time" in microseconds (string), PX TTL
-- KEYS[2] learned gap of the endpoint (us): a threshold a 429 named, when larger than ours; PX TTL
-- ARGV[1] configured gap (us)   ARGV[2] max wait (us)   ARGV[3] now (us; '' = this Redis server's TIME)
-- ARGV[4] grace (ms) the slot key outlives its next-allowed time by
-- Returns {1, wait_us, gap_us} slot taken: call after waiting wait_us |
--         {0, wait_us, gap_us} not taken: the wait would exceed the maximum (nothing changed).
local gap = tonumber(ARGV[1])
local learned = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if learned > gap then
  gap = learned
end
local max_wait = tonumber(ARGV[2])
local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[3])
end
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if nxt < now then
  nxt = now
end
local wait = nxt - now
if wait > max_wait then
  return {0, tostring(wait), tostring(gap)}
end
redis.call('SET', KEYS[1], string.format('%.0f', nxt + gap), 'PX', math.ceil((wait + gap) / 1000) + tonumber(ARGV[4]))
return {1, tostring(wait), tostring(gap)}
