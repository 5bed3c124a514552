-- Finish the polls of a batch: reschedule each only if its claim token is still the one stored.
-- KEYS[1] due zset, KEYS[2] claims hash, KEYS[3] last-poll hash.
-- ARGV[1] now, then triples: id, token, next due.
-- A "poll now" that arrived while the poll ran (score below the claim's expiry) wins over the new due
-- time; a member removed meanwhile (forget) is not re-added. Returns the number of stale finishes.
local stale = 0
for i = 2, #ARGV, 3 do
  local id, token, due = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local claim = redis.call('HGET', KEYS[2], id)
  local sep = claim and string.find(claim, '|', 1, true)
  if claim and sep and string.sub(claim, 1, sep - 1) == token then
    local until_ = tonumber(string.sub(claim, sep + 1))
    redis.call('HDEL', KEYS[2], id)
    local cur = redis.call('ZSCORE', KEYS[1], id)
    if cur then
      cur = tonumber(cur)
      if cur < until_ and cur < due then due = cur end
      redis.call('ZADD', KEYS[1], due, id)
    end
    redis.call('HSET', KEYS[3], id, ARGV[1])
  else
    stale = stale + 1
  end
end
return stale
