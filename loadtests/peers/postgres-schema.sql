-- What a user would build instead of the engine: a balance per enrollment
-- and an append-only ledger whose unique idempotency key makes a retried
-- earn harmless. Loaded by loadtests/peer-postgres with psql, which passes
-- the number of enrollments as :accounts.
create table balance (
    enrollment_id int primary key,
    points bigint not null
);

create table ledger (
    id bigserial primary key,
    enrollment_id int not null,
    idempotency_key uuid not null unique,
    points bigint not null,
    created_at timestamptz not null default now()
);

insert into balance (enrollment_id, points)
select g, 0 from generate_series(1, :accounts) as g;

-- Fresh statistics so the first run plans like the later ones.
analyze;
