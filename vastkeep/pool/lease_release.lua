-- End a client lease now; the instance returns to the pool after a health check that passes after this end.
-- KEYS[1] leases hash   KEYS[2] lease index   ARGV[1] lease id   ARGV[2] now (epoch s)   ARGV[3] now ISO
-- (+ the memo's key and TTL: lease_memo.lua)
-- Answers {1, instance id, fence, client} | {0} unknown, already ended or expired.
local function run()
  local id = redis.call('HGET', KEYS[2], ARGV[1])
  if not id then return {0} end
  redis.call('HDEL', KEYS[2], ARGV[1])
  local raw = redis.call('HGET', KEYS[1], id)
  if not raw then return {0} end
  local entry = cjson.decode(raw)
  if entry.lease_id ~= ARGV[1] or entry.state ~= 'active' then return {0} end
  local live = tonumber(entry['until']) > tonumber(ARGV[2])
  entry.state = 'ended'
  entry['until'] = math.min(tonumber(entry['until']), tonumber(ARGV[2]))
  if live then entry.ended_iso = ARGV[3] end
  redis.call('HSET', KEYS[1], id, cjson.encode(entry))
  if not live then return {0} end
  return {1, id, entry.fence, entry.client}
end
