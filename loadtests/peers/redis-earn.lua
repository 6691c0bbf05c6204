-- One earn for the Redis peer, atomic because a script runs alone:
--   KEYS[1] the enrollment's balance, KEYS[2] the event stream,
--   ARGV[1] the points. Returns the new balance.
--
-- The stream is not capped: it is the ledger, and the engine and the
-- Postgres peer keep every earn, so trimming would both lose history a
-- loyalty program must keep and make this peer do less work than the others.
-- A few runs add a few million entries at most, well within memory here.
local balance = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'enrollment', KEYS[1], 'points', ARGV[1], 'balance', balance)
return balance
