-- The memo around every grant / renew / release: leasing.py appends this to the op's script, which defines
-- run(). An answer that changed something (its first element is 1: granted, renewed, released) is stored under
-- the call's request id, so a re-sent script (redis-py after a timeout or a dropped connection) or a retried
-- task gets that answer back instead of acting a second time. A refusal changed nothing and is not stored: the
-- same call may succeed later (a client retrying a 503 with its Idempotency-Key is served once it can be).
-- KEYS[#KEYS] memo key   ARGV[#ARGV] memo TTL (ms)
-- Returns {0 fresh | 1 replayed, the op's answer as JSON}.
local memo = KEYS[#KEYS]
local seen = redis.call('GET', memo)
if seen then return {1, seen} end
local answer = run()
local encoded = cjson.encode(answer)
if answer[1] == 1 then redis.call('SET', memo, encoded, 'PX', tonumber(ARGV[#ARGV])) end
return {0, encoded}
