-- ARGV: now_ms, limit. Expires live lines whose deadline is before now.
-- Returns {reservations reclaimed (primary lines), ids scanned}.
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local n = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[3], id)
  local r = get(id)
  if r and r.s == 'R' then
    move('reserved', 'available', r.q)
    r.s = 'X'
    put(id, r)
    n = n + (r.p or 0)
  end
end
return {n, #ids}
