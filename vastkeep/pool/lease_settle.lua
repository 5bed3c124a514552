-- Notice expired client leases (an expiry is an `until` field, not a Redis TTL): each active entry whose
-- `until` has passed turns 'ended' (its ended_iso stays the ISO of that `until`) and its lease id leaves the
-- index; index entries that point at no live lease are dropped too. Safe to run twice: the second finds none.
-- KEYS[1] leases hash   KEYS[2] lease index   ARGV[1] now (epoch s)
-- Returns {instance id, client, fence, ...} of the leases that expired now (flat, three per lease).
local now = tonumber(ARGV[1])
local out = {}
local live = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local id, ok, entry = all[i], pcall(cjson.decode, all[i + 1])
  if ok and type(entry) == 'table' and entry.state == 'active' then
    if tonumber(entry['until']) <= now then
      entry.state = 'ended'
      redis.call('HSET', KEYS[1], id, cjson.encode(entry))
      table.insert(out, id)
      table.insert(out, tostring(entry.client))
      table.insert(out, entry.fence)
    elseif entry.lease_id then
      live[entry.lease_id] = id
    end
  end
end
local index = redis.call('HGETALL', KEYS[2])
for i = 1, #index, 2 do
  if live[index[i]] ~= index[i + 1] then redis.call('HDEL', KEYS[2], index[i]) end
end
return out
