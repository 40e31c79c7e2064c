-- Returns a sold line to stock (a refund). ARGV: id. Returns `returned`,
-- `T` (returned already), `unknown`, or the line's state when it was
-- never sold (`R`, `L`, `X`): nothing changes then.
local id = ARGV[1]
local r = get(id)
if not r then return 'unknown' end
if r.s ~= 'C' then return r.s end
move('sold', 'available', r.q)
if r.p then redis.call('HINCRBY', KEYS[1], 'committed', -1) end
r.s = 'T'
r.rt = nil
r.k = nil
put(id, r)
return 'returned'
