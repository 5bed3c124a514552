-- An operator's write of one supervision record beside the sweep: compare-and-set on the stored JSON text.
-- KEYS[1] book hash   ARGV[1] daemon id   ARGV[2] the JSON text read before   ARGV[3] the new JSON text
-- Returns 1 written | 0 the record changed (or this call was re-sent after it applied): re-read and decide.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
