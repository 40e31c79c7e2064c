-- ARGV: id, claim token ("" for single-line). Returns `committed`,
-- `retaken` (expired line sold from available), `C` (already),
-- `sold_out`, `L`, `T` (returned by a refund) or `unknown`.
local id, token = ARGV[1], ARGV[2]
local r = get(id)
if not r then return 'unknown' end
if r.s == 'C' then
  if r.rt and token ~= '' then
    r.k = r.k or {}
    r.k[token] = 1
    put(id, r)
  end
  return 'C'
end
if r.s == 'L' or r.s == 'T' then return r.s end
if r.s == 'R' then
  move('reserved', 'sold', r.q)
  redis.call('ZREM', KEYS[3], id)
  r.s = 'C'
  put(id, r)
  if r.p then redis.call('HINCRBY', KEYS[1], 'committed', 1) end
  return 'committed'
end
-- 'X': the reaper gave the units back; sell them again if still there.
if tonumber(redis.call('HGET', KEYS[1], 'available')) < r.q then return 'sold_out' end
move('available', 'sold', r.q)
r.s = 'C'
if token ~= '' then
  r.rt = 1
  r.k = {[token] = 1}
end
put(id, r)
if r.p then redis.call('HINCRBY', KEYS[1], 'committed', 1) end
return 'retaken'
