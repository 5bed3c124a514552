-- Rebuild the status counts from the records, atomically (rare: only when the counts disagree with the
-- number of ids, e.g. records written before the counts existed). O(records), never on a normal read.
-- KEYS[1] instances (set of ids)   KEYS[2] instances:by-status (hash)   ARGV[1] the instance key prefix
local counts = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local raw = redis.call('GET', ARGV[1] .. id)
  if raw then
    local ok, rec = pcall(cjson.decode, raw)
    local status = (ok and type(rec) == 'table' and type(rec['status']) == 'string') and rec['status'] or '?'
    counts[status] = (counts[status] or 0) + 1
  else
    redis.call('SREM', KEYS[1], id)  -- an id without a record: the set follows the records
  end
end
redis.call('DEL', KEYS[2])
local flat = {}
for status, n in pairs(counts) do
  flat[#flat + 1] = status
  flat[#flat + 1] = n
end
if #flat > 0 then redis.call('HSET', KEYS[2], unpack(flat)) end
return flat
