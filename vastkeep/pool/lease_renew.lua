-- Extend a live client lease. KEYS[1] leases hash   KEYS[2] lease index   KEYS[3] destroy claims hash
-- ARGV[1] lease id   ARGV[2] now (epoch s)   ARGV[3] new until (epoch s)   ARGV[4] new until ISO
-- ARGV[5] a new lease id replacing ARGV[1] in the same step, or '' (rotation: the old id was exposed)
-- (+ the memo's key and TTL: lease_memo.lua, so a re-sent rotation answers with the id it installed)
-- Answers {1, instance id, fence, new lease id or ''} | {0} unknown or expired | {-1, instance id} being destroyed.
local function run()
  local id = redis.call('HGET', KEYS[2], ARGV[1])
  if not id then return {0} end
  local raw = redis.call('HGET', KEYS[1], id)
  if not raw then return {0} end
  local entry = cjson.decode(raw)
  if entry.lease_id ~= ARGV[1] or entry.state ~= 'active' or tonumber(entry['until']) <= tonumber(ARGV[2]) then
    return {0}
  end
  if redis.call('HEXISTS', KEYS[3], id) == 1 then return {-1, id} end
  entry['until'] = tonumber(ARGV[3])
  entry.ended_iso = ARGV[4]
  if ARGV[5] ~= '' then
    redis.call('HDEL', KEYS[2], ARGV[1])
    redis.call('HSET', KEYS[2], ARGV[5], id)
    entry.lease_id = ARGV[5]
  end
  redis.call('HSET', KEYS[1], id, cjson.encode(entry))
  return {1, id, entry.fence, ARGV[5]}
end
