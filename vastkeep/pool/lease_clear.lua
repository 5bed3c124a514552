-- Mark ended leases whose health check passed after their end as cleared: from then on the instance is free
-- whatever later verdicts say (a later failure is Layer 4/5's business, not the post-lease check's).
-- KEYS[1] leases hash   ARGV: instance id, fence, instance id, fence, ...
-- Only an entry that still holds that ended lease is marked (a new grant meanwhile is left alone).
-- Returns the number marked.
local marked = 0
for i = 1, #ARGV, 2 do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  if raw then
    local entry = cjson.decode(raw)
    if tostring(entry.fence) == ARGV[i + 1] and entry.state ~= 'active' and not entry.cleared then
      entry.cleared = true
      redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(entry))
      marked = marked + 1
    end
  end
end
return marked
