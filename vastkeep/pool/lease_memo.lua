-- The memo around every grant / renew / release: leasing.py appends this to the op's script, which defines
-- run(). The op's first answer is stored under the call's request id, so a re-sent script (redis-py after a
-- timeout or a dropped connection) or a retried task gets that answer back instead of acting a second time.
-- KEYS[#KEYS] memo key   ARGV[#ARGV] memo TTL (ms)
-- Returns {0 fresh | 1 replayed, the op's answer as JSON}.
local memo = KEYS[#KEYS]
local seen = redis.call('GET', memo)
if seen then return {1, seen} end
local answer = cjson.encode(run())
redis.call('SET', memo, answer, 'PX', tonumber(ARGV[#ARGV]))
return {0, answer}
