-- Append complete log lines and move the stored offset, atomically and fenced.
-- KEYS[1] collector lease hash {owner, fence}   KEYS[2] collector hash (offset:<file>)   KEYS[3] log stream
-- ARGV[1] fence   ARGV[2] file   ARGV[3] expected offset   ARGV[4] new offset   ARGV[5] maxlen
-- ARGV[6..] pairs: line offset, line bytes
-- Returns {1, new offset} | {-1, current fence} stale collector | {-2, stored offset} offset moved
local fence = redis.call('HGET', KEYS[1], 'fence')
if fence ~= ARGV[1] then
  return {-1, fence or ''}
end
local field = 'offset:' .. ARGV[2]
local stored = redis.call('HGET', KEYS[2], field) or '0'
if stored ~= ARGV[3] then
  return {-2, stored}
end
-- Ids only grow: never let a line land at or below the last stored one (no partial script writes).
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
if #ARGV >= 6 and last[1] then
  local last_off = tonumber(string.match(last[1][1], '^(%d+)'))
  if last_off >= tonumber(ARGV[6]) then
    return {-2, stored}
  end
end
for i = 6, #ARGV, 2 do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], ARGV[i] .. '-1', 't', ARGV[i + 1])
end
redis.call('HSET', KEYS[2], field, ARGV[4])
return {1, ARGV[4]}
