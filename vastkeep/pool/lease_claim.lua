-- Claim an instance for destruction unless a client lease on it is live (excess is never taken from a holder).
-- KEYS[1] leases hash   KEYS[2] destroy claims hash   ARGV[1] instance id   ARGV[2] now   ARGV[3] reason
-- ARGV[4] "force" to claim even a leased instance (it died: the lease is broken anyway)
-- Returns 1 claimed | 0 leased (not claimed).
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw and ARGV[4] ~= 'force' then
  local entry = cjson.decode(raw)
  if entry.state == 'active' and tonumber(entry['until']) > tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
