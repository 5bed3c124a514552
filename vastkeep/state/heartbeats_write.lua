-- Write one heartbeat and drop the expired ones, atomically.
-- KEYS[1] heartbeats hash (name -> JSON)   KEYS[2] expiry zset (name -> expires at, epoch s)
-- ARGV[1] process name   ARGV[2] record JSON   ARGV[3] expires at   ARGV[4] now
-- The prune is bounded: at most 100 expired names per write (any later write takes the rest).
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4], 'LIMIT', 0, 100)
if #expired > 0 then
  redis.call('HDEL', KEYS[1], unpack(expired))
  redis.call('ZREM', KEYS[2], unpack(expired))
end
return #expired
