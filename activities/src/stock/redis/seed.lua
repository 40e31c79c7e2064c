-- ARGV: units. Replaces the SKU's stock and forgets its reservations.
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'initial', ARGV[1], 'available', ARGV[1], 'reserved', 0, 'sold', 0, 'committed', 0)
return 1
