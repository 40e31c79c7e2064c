-- Undoes what one attempt of a multi-line reserve took. ARGV: id, token.
-- Removes the attempt's claim; the line goes back only when no other
-- attempt claims it and it is still only reserved. Returns 1 when units
-- went back.
local id, token = ARGV[1], ARGV[2]
local r = get(id)
if not r then return 0 end
if not r.c or not r.c[token] then return 0 end
r.c[token] = nil
if next(r.c) ~= nil or r.s == 'C' or r.s == 'L' then
  put(id, r)
  return 0
end
redis.call('HDEL', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
if r.s == 'R' then
  move('reserved', 'available', r.q)
  return 1
end
return 0
