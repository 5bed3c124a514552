-- Grant a client lease on one ready, idle instance of the pool, atomically across every worker.
-- KEYS[1] instances set   KEYS[2] leases hash (instance id -> JSON)   KEYS[3] lease index (lease id -> instance id)
-- KEYS[4] fence counter   KEYS[5] destroy claims hash (instance id -> reason)
-- ARGV[1] instance key prefix ("<prefix>:instance:")   ARGV[2] label head ("<prefix>:<pool>:")
-- ARGV[3] now (epoch s)   ARGV[4] until (epoch s)   ARGV[5] until ISO   ARGV[6] lease id   ARGV[7] client
-- ARGV[8] now ISO   (+ the memo's key and TTL: lease_memo.lua, so a re-sent grant never leases twice)
-- An instance is grantable when its record is "ready" under our label, no destroy claim is on it, and it has no
-- live lease; after a lease ended (expired or released) it needs a passing health check (a port validation)
-- checked after that end (or its entry cleared by the round once one passed): one not checked yet is listed so
-- the caller queues its check, one whose check failed is counted (the reconcile round retires and replaces it). A ready record whose Layer 4 keepalive lost ComfyUI
-- (extra.keepalive_lost_since set, cleared when a ping answers again) is not handed out either.
-- Lowest instance id first, so grants are deterministic.
-- Answers {1, instance id, fence, connection url, lease id}
--       | {0, ready, leased, soonest end (epoch s or -1), unchecked, unreachable, {id, fence, ... to check},
--          check failed}.
local function run()
  local now = tonumber(ARGV[3])
  local ids = redis.call('SMEMBERS', KEYS[1])
  table.sort(ids, function(a, b)
    local na, nb = tonumber(a), tonumber(b)
    if na and nb then return na < nb end
    return a < b
  end)
  local ready, leased, unchecked, unreachable, failed, soonest = 0, 0, 0, 0, 0, -1
  local to_check = {}
  local function lost(rec)
    if type(rec.extra) ~= 'table' then return false end
    local since = rec.extra.keepalive_lost_since
    return since ~= nil and since ~= cjson.null and since ~= false
  end
  for _, id in ipairs(ids) do
    local raw = redis.call('GET', ARGV[1] .. id)
    if raw then
      local ok, rec = pcall(cjson.decode, raw)
      local candidate = ok and type(rec) == 'table' and rec.status == 'ready' and type(rec.label) == 'string'
          and string.sub(rec.label, 1, string.len(ARGV[2])) == ARGV[2]
          and redis.call('HEXISTS', KEYS[5], id) == 0
      if candidate and lost(rec) then
        unreachable = unreachable + 1
      elseif candidate then
        ready = ready + 1
        local free = true
        local entry_raw = redis.call('HGET', KEYS[2], id)
        if entry_raw then
          local entry = cjson.decode(entry_raw)
          if entry.state == 'active' and tonumber(entry['until']) > now then
            free = false
            leased = leased + 1
            if soonest < 0 or tonumber(entry['until']) < soonest then soonest = tonumber(entry['until']) end
          else
            local pv = rec.port_validation
            local checked = type(pv) == 'table' and type(pv.checked_at) == 'string'
                and pv.checked_at > tostring(entry.ended_iso or '')
            if not (entry.cleared or (checked and pv.success == true)) then
              free = false
              if checked then
                failed = failed + 1
              else
                unchecked = unchecked + 1
                table.insert(to_check, id)
                table.insert(to_check, entry.fence)
              end
            end
          end
        end
        if free then
          local fence = redis.call('INCR', KEYS[4])
          local url = rec.connection_url
          if type(url) ~= 'string' then url = '' end
          local new = cjson.encode({lease_id = ARGV[6], client = ARGV[7], ['until'] = tonumber(ARGV[4]),
                                    ended_iso = ARGV[5], granted_at = now, fence = fence, state = 'active',
                                    instance_id = id})
          redis.call('HSET', KEYS[2], id, new)
          redis.call('HSET', KEYS[3], ARGV[6], id)
          return {1, id, fence, url, ARGV[6]}
        end
      end
    end
  end
  return {0, ready, leased, tostring(soonest), unchecked, unreachable, to_check, failed}
end
