-- One earn, as an application would send it: the ledger row (its unique key
-- is the idempotency check) and the balance move commit together. The key
-- is generated server-side because pgbench cannot make UUIDs; the unique
-- index is still checked on every insert. :accounts comes from pgbench -D.
\set enrollment random(1, :accounts)
BEGIN;
INSERT INTO ledger (enrollment_id, idempotency_key, points)
    VALUES (:enrollment, gen_random_uuid(), 10);
UPDATE balance SET points = points + 10 WHERE enrollment_id = :enrollment;
COMMIT;
