-- Undoes what one attempt of a multi-line reserve took. ARGV: id, token;
-- token "*" (a reserve that failed) undoes the line whoever claimed it,
-- unless it is committed or released. Returns 1 when units went back.
local id, token = ARGV[1], ARGV[2]
local r = get(id)
if not r then return 0 end
if token == '*' then
  if r.s == 'C' or r.s == 'L' then return 0 end
else
  if not r.c or not r.c[token] then return 0 end
  r.c[token] = nil
  if next(r.c) ~= nil or r.s == 'C' or r.s == 'L' then
    put(id, r)
    return 0
  end
end
redis.call('HDEL', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
if r.s == 'R' then
  move('reserved', 'available', r.q)
  return 1
end
return 0
