-- Failover: move a live client lease off its lost instance onto a ready, idle one, atomically, and point the
-- lease's endpoint token at the new grant (the client's URL and token do not change).
-- KEYS[1] instances set   KEYS[2] leases hash   KEYS[3] lease index   KEYS[4] fence counter   KEYS[5] claims hash
-- ARGV[1] instance key prefix   ARGV[2] label head ("<prefix>:<pool>:")   ARGV[3] lost instance id
-- ARGV[4] the lease's fence on it (compare-and-set: the move happens once per grant)   ARGV[5] now (epoch s)
-- ARGV[6] now ISO   ARGV[7] endpoint key prefix ("<prefix>:endpoint:")
-- ARGV[8] endpoint-grant key prefix ("<prefix>:endpoint-grant:<pool>:")   ARGV[9] reason   ARGV[10] pool name
-- (+ the memo's key and TTL: lease_memo.lua. The caller's request id is derived from the lost grant, so every
-- process that decides the same failover, and redis-py's re-send, gets the first answer.)
-- The new instance is chosen as a grant chooses (lease_grant.lua): ready under our label, no destroy claim,
-- ComfyUI not lost, no live lease, a passing health check after its last lease ended; lowest id first.
-- The old entry ends (reason failover), so the lost instance returns to the pool only after a health check.
-- Answers {1, new instance id, new fence, connection url, lost instance id}
--       | {0, 'gone'} the lease is no longer on that grant (ended, expired, moved) | {0, 'none-ready'}.
local function run()
  local now = tonumber(ARGV[5])
  local old_raw = redis.call('HGET', KEYS[2], ARGV[3])
  if not old_raw then return {0, 'gone'} end
  local old = cjson.decode(old_raw)
  if old.state ~= 'active' or tonumber(old['until']) <= now or tonumber(old.fence) ~= tonumber(ARGV[4]) then
    return {0, 'gone'}
  end
  local ids = redis.call('SMEMBERS', KEYS[1])
  table.sort(ids, function(a, b)
    local na, nb = tonumber(a), tonumber(b)
    if na and nb then return na < nb end
    return a < b
  end)
  local function lost(rec)
    if type(rec.extra) ~= 'table' then return false end
    local since = rec.extra.keepalive_lost_since
    return since ~= nil and since ~= cjson.null and since ~= false
  end
  local function free(id, rec)
    local entry_raw = redis.call('HGET', KEYS[2], id)
    if not entry_raw then return true end
    local entry = cjson.decode(entry_raw)
    if entry.state == 'active' and tonumber(entry['until']) > now then return false end
    local pv = rec.port_validation
    local checked = type(pv) == 'table' and type(pv.checked_at) == 'string'
        and pv.checked_at > tostring(entry.ended_iso or '')
    return entry.cleared or (checked and pv.success == true)
  end
  for _, id in ipairs(ids) do
    local raw = id ~= ARGV[3] and redis.call('GET', ARGV[1] .. id)
    if raw then
      local ok, rec = pcall(cjson.decode, raw)
      if ok and type(rec) == 'table' and rec.status == 'ready' and type(rec.label) == 'string'
          and string.sub(rec.label, 1, string.len(ARGV[2])) == ARGV[2]
          and redis.call('HEXISTS', KEYS[5], id) == 0 and not lost(rec) and free(id, rec) then
        local fence = redis.call('INCR', KEYS[4])
        local url = rec.connection_url
        if type(url) ~= 'string' then url = '' end
        local moved = cjson.decode(old_raw)
        moved.instance_id, moved.fence, moved.granted_at = id, fence, now
        moved.moved_from, moved.moves = ARGV[3], (tonumber(old.moves) or 0) + 1
        redis.call('HSET', KEYS[2], id, cjson.encode(moved))
        redis.call('HSET', KEYS[3], old.lease_id, id)
        old.state, old.ended_iso, old.reason, old.moved_to = 'ended', ARGV[6], ARGV[9], id
        old['until'] = math.min(tonumber(old['until']), now)
        redis.call('HSET', KEYS[2], ARGV[3], cjson.encode(old))
        local old_grant = ARGV[8] .. ARGV[3] .. ':' .. ARGV[4]
        local digest = redis.call('GET', old_grant)
        if digest then
          local at = math.floor(tonumber(moved['until']) * 1000)
          local ep_raw = redis.call('GET', ARGV[7] .. digest)
          local ep = ep_raw and cjson.decode(ep_raw) or {}
          ep.instance_id, ep.fence = id, fence
          ep.pool = ARGV[10]
          redis.call('SET', ARGV[7] .. digest, cjson.encode(ep), 'PXAT', at)
          redis.call('SET', ARGV[8] .. id .. ':' .. fence, digest, 'PXAT', at)
          redis.call('DEL', old_grant)
        end
        return {1, id, fence, url, ARGV[3]}
      end
    end
  end
  return {0, 'none-ready'}
end
