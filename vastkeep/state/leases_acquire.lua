-- Acquire (or re-acquire) a fenced lease, atomically.
-- KEYS[1] lease hash {owner, fence, ttl_ms, acquired_at}   KEYS[2] fence counter (never expires)
-- ARGV[1] owner token   ARGV[2] ttl_ms   ARGV[3] now (epoch seconds, as text)
-- Returns {2, fence, acquired_at} new grant | {1, fence, acquired_at} same owner, extended |
--         {0, holder_fence, pttl} held by someone else.
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner == ARGV[1] then
  redis.call('HSET', KEYS[1], 'ttl_ms', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local h = redis.call('HMGET', KEYS[1], 'fence', 'acquired_at')
  return {1, h[1], h[2]}
end
if owner then
  return {0, redis.call('HGET', KEYS[1], 'fence'), redis.call('PTTL', KEYS[1])}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'fence', fence, 'ttl_ms', ARGV[2], 'acquired_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {2, tostring(fence), ARGV[3]}
