-- Write the supervision sweep's records, only while this exact sweeper grant holds the supervisor lease.
-- KEYS[1] book hash   KEYS[2] lease hash
-- ARGV[1] owner   ARGV[2] fence   ARGV[3] number of records to put   then id, JSON pairs, then ids to drop
-- Returns the number of records written | -1 the lease no longer backs this writer (nothing written).
local h = redis.call('HMGET', KEYS[2], 'owner', 'fence')
if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then
  return -1
end
local n = tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  i = i + 1
end
return n
