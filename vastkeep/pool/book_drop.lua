-- Drop a pending rent only if it is still the one the caller resolved (compare-and-delete).
-- KEYS[1] pending hash   ARGV[1] slot   ARGV[2] the JSON the caller read
-- Returns 1 dropped | 0 gone already or replaced by another.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
