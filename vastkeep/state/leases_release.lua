-- Delete a lease only while this exact grant (owner AND fence) still holds it.
-- KEYS[1] lease hash   ARGV[1] owner   ARGV[2] fence
-- Returns 1 released | 0 not ours (already expired or granted to someone else: left alone).
local h = redis.call('HMGET', KEYS[1], 'owner', 'fence')
if h[1] == ARGV[1] and h[2] == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
