-- Settles expired lines of one SKU. ARGV: now_ms, keep_until_ms, then
-- pairs (id, "1" when its saga lives / "0" when it has ended or is
-- unknown). A line still past its deadline is kept with the new deadline
-- (saga lives) or expired, its units back to available. A line that changed
-- since it was listed (renewed, committed, released) is left alone.
-- Returns {reservations reclaimed, reservations kept} (primary lines).
local now, keep_until = tonumber(ARGV[1]), ARGV[2]
local reclaimed, kept = 0, 0
for i = 3, #ARGV, 2 do
  local id, lives = ARGV[i], ARGV[i + 1]
  local deadline = redis.call('ZSCORE', KEYS[3], id)
  if deadline and tonumber(deadline) < now then
    local r = get(id)
    if lives == '1' and r and r.s == 'R' then
      redis.call('ZADD', KEYS[3], keep_until, id)
      kept = kept + (r.p or 0)
    else
      redis.call('ZREM', KEYS[3], id)
      if r and r.s == 'R' then
        move('reserved', 'available', r.q)
        r.s = 'X'
        put(id, r)
        reclaimed = reclaimed + (r.p or 0)
      end
    end
  end
end
return {reclaimed, kept}
