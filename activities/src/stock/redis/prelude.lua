-- Shared by every script: read and write a line record of `KEYS[2]`.
local function get(id)
  local v = redis.call('HGET', KEYS[2], id)
  if v then return cjson.decode(v) end
  return nil
end
local function put(id, r) redis.call('HSET', KEYS[2], id, cjson.encode(r)) end
local function move(field_from, field_to, q)
  if field_from then redis.call('HINCRBY', KEYS[1], field_from, -q) end
  if field_to then redis.call('HINCRBY', KEYS[1], field_to, q) end
end
