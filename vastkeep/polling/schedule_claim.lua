-- Claim up to ARGV[2] instances whose poll is due (score <= ARGV[1]) and not already in flight.
-- KEYS[1] due zset, KEYS[2] claims hash, KEYS[3] claim counter.
-- ARGV[1] now, ARGV[2] limit, ARGV[3] claimed until (now + claim timeout).
-- A claimed member's score moves to "claimed until", so a claimer that dies (kill -9) loses it by itself.
-- Returns {id1, token1, due1, id2, token2, due2, ...} (due = the score before the claim: lateness).
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, limit * 2)
local out = {}
local n = 0
for i = 1, #ids, 2 do
  local id = ids[i]
  if n >= limit then break end
  local claim = redis.call('HGET', KEYS[2], id)
  local live = false
  if claim then
    local sep = string.find(claim, '|', 1, true)
    live = sep ~= nil and tonumber(string.sub(claim, sep + 1)) > now
  end
  if not live then
    local token = tostring(redis.call('INCR', KEYS[3]))
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    redis.call('HSET', KEYS[2], id, token .. '|' .. ARGV[3])
    out[#out + 1] = id
    out[#out + 1] = token
    out[#out + 1] = ids[i + 1]
    n = n + 1
  end
end
return out
