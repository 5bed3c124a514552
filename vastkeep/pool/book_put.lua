-- Record a pending rent, only while this exact reconciler grant holds the pool lease, and only if
-- the slot has no pending rent yet (a rent in flight is never overwritten: it may still land).
-- KEYS[1] pending hash   KEYS[2] lease hash   ARGV[1] owner   ARGV[2] fence   ARGV[3] slot   ARGV[4] JSON
-- Returns 1 recorded | 0 the slot already has one | -1 the lease no longer backs this writer.
local h = redis.call('HMGET', KEYS[2], 'owner', 'fence')
if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then
  return -1
end
return redis.call('HSETNX', KEYS[1], ARGV[3], ARGV[4])
