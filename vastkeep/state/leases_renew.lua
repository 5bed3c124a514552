-- Extend a lease only while this exact grant (owner AND fence) still holds it.
-- KEYS[1] lease hash   ARGV[1] owner   ARGV[2] fence   ARGV[3] ttl_ms
-- Returns 1 renewed | 0 lost (expired, released, or granted to someone else).
local h = redis.call('HMGET', KEYS[1], 'owner', 'fence')
if h[1] == ARGV[1] and h[2] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'ttl_ms', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
