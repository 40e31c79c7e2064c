-- KEYS: stock, resv, deadlines. ARGV: id, qty, deadline_ms, claim token
-- ("" for single-line orders), primary ("1" on the order's first SKU: that
-- line stands for the reservation in counts). Returns `taken`, the existing state (`R`,
-- `C`, `L`, `X`), `out_of_stock` or `unknown_sku`.
local id, token = ARGV[1], ARGV[4]
local r = get(id)
if r then
  if (r.s == 'R' or r.s == 'C') and token ~= '' then
    r.c = r.c or {}
    r.c[token] = 1
    put(id, r)
  end
  return r.s
end
local avail = redis.call('HGET', KEYS[1], 'available')
if not avail then return 'unknown_sku' end
local q = tonumber(ARGV[2])
if tonumber(avail) < q then return 'out_of_stock' end
move('available', 'reserved', q)
local rec = {s = 'R', q = q}
if ARGV[5] == '1' then rec.p = 1 end
if token ~= '' then rec.c = {[token] = 1} end
put(id, rec)
redis.call('ZADD', KEYS[3], ARGV[3], id)
return 'taken'
