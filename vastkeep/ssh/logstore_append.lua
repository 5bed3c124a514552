-- Append complete log lines and move the stored offset, atomically and fenced.
-- KEYS[1] collector lease hash {owner, fence}   KEYS[2] collector hash (offset:<file>)   KEYS[3] log stream
-- ARGV[1] fence   ARGV[2] file   ARGV[3] expected offset (= offset of the first line)   ARGV[4] new offset
-- ARGV[5] bytes to keep   ARGV[6] the lines laid end to end   ARGV[7] their lengths, comma-separated, or ''
-- when every line ends with its newline (readers split on it)
-- One entry per call: id '<offset of its first line>-1', fields t (the bytes) and n (the line lengths, if any).
-- Ids are byte offsets, so MINID ~ (new offset - bytes to keep) bounds the stream by bytes of log kept.
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
-- Ids only grow: refuse a write at or below the last stored entry (the offset hash was reset by hand).
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
if last[1] and tonumber(string.match(last[1][1], '^(%d+)')) >= tonumber(ARGV[3]) then
  return {-2, stored}
end
local minid = tonumber(ARGV[4]) - tonumber(ARGV[5])
if minid < 0 then
  minid = 0
end
if ARGV[7] == '' then
  redis.call('XADD', KEYS[3], 'MINID', '~', string.format('%d', minid), ARGV[3] .. '-1', 't', ARGV[6])
else
  redis.call('XADD', KEYS[3], 'MINID', '~', string.format('%d', minid), ARGV[3] .. '-1', 't', ARGV[6],
             'n', ARGV[7])
end
redis.call('HSET', KEYS[2], field, ARGV[4])
return {1, ARGV[4]}
