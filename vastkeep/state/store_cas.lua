-- Compare-and-set of one instance record, optionally fenced by a lease.
-- KEYS[1] instance:<id> (JSON)   KEYS[2] instances (set of ids)   KEYS[3] instances:by-status (hash)
-- KEYS[4] lease:<name> (only when fenced)
-- ARGV[1] the JSON the writer read ('' = the record must be absent)
-- ARGV[2] the JSON to store ('' = delete the record)
-- ARGV[3] instance id   ARGV[4] lease owner   ARGV[5] lease fence   ARGV[6] lease name (ARGV[4..6] only when fenced)
-- Every lease name has its own fence counter, so the stored fence is compared only when the record was
-- last fenced by the same lease name (its 'fence_name'); numbers of different names are incomparable.
-- Returns {'OK'} | {'CONFLICT'} (changed since read: re-read and retry)
--       | {'LOST', live fence or ''} (the lease lapsed or is someone else's)
--       | {'STALE', stored fence} (the record carries a higher fence of the same lease name)
-- The status counts (KEYS[3]) move with every write here, the only writer of records, so /metrics reads
-- one small hash instead of every record; an unreadable record counts under '?'.
local function status_of(raw)
  if not raw or raw == '' then return nil end
  local ok, rec = pcall(cjson.decode, raw)
  if ok and type(rec) == 'table' and type(rec['status']) == 'string' then return rec['status'] end
  return '?'
end
local cur = redis.call('GET', KEYS[1])
if #KEYS == 4 then
  local h = redis.call('HMGET', KEYS[4], 'owner', 'fence')
  if h[1] ~= ARGV[4] or h[2] ~= ARGV[5] then
    return {'LOST', h[2] or ''}
  end
  if cur then
    local ok, rec = pcall(cjson.decode, cur)
    if ok and type(rec) == 'table' and rec['fence_name'] == ARGV[6] and type(rec['fence']) == 'number'
        and tonumber(ARGV[5]) < rec['fence'] then
      return {'STALE', tostring(rec['fence'])}
    end
  end
end
if (cur or '') ~= ARGV[1] then
  return {'CONFLICT'}
end
local old_status, new_status = status_of(cur), status_of(ARGV[2])
if old_status ~= new_status then
  if old_status and redis.call('HINCRBY', KEYS[3], old_status, -1) <= 0 then
    redis.call('HDEL', KEYS[3], old_status)
  end
  if new_status then redis.call('HINCRBY', KEYS[3], new_status, 1) end
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
end
return {'OK'}
