-- ARGV: id. Returns `released`, `nothing` (tombstone written) or
-- `committed` (nothing changed).
local id = ARGV[1]
local r = get(id)
if not r then
  put(id, {s = 'L', q = 0})
  return 'nothing'
end
-- Sold, or sold and returned by a refund: nothing to release.
if r.s == 'C' or r.s == 'T' then return 'committed' end
if r.s == 'R' then
  move('reserved', 'available', r.q)
  r.s = 'L'
  put(id, r)
  redis.call('ZREM', KEYS[3], id)
end
return 'released'
