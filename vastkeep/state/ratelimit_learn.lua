-- Remember a larger gap for one endpoint (a threshold a 429 named), for every worker; never lower it.
-- KEYS[1] learned gap (us)   ARGV[1] gap (us)   ARGV[2] TTL (ms)
-- Returns the learned gap now in force (us).
local old = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local new = tonumber(ARGV[1])
if new > old then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return new
end
return old
