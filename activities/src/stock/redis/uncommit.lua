-- Gives back a line one commit attempt re-took. ARGV: id, token.
local id, token = ARGV[1], ARGV[2]
local r = get(id)
if not r or r.s ~= 'C' or not r.rt or not r.k or not r.k[token] then return 0 end
r.k[token] = nil
if next(r.k) == nil then
  move('sold', 'available', r.q)
  if r.p then redis.call('HINCRBY', KEYS[1], 'committed', -1) end
  r.s = 'X'
  r.rt = nil
  r.k = nil
end
put(id, r)
return 1
