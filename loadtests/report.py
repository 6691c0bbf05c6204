"""Renders docs/PERFORMANCE.md from the raw figures `loadtests/run-all`
collects (JSON files in a summary directory) and criterion's estimates.

    python3 loadtests/report.py SUMMARY_DIR [CRITERION_DIR]

The first rendering of a run that made the benchmarks (criterion.txt in
SUMMARY_DIR) copies their medians out of CRITERION_DIR into
SUMMARY_DIR/criterion.json; later renderings read them from there and
need no CRITERION_DIR (one given is then ignored), so the page keeps the
run's own figures after criterion's directory has been overwritten by
other benchmark runs. `run-all` renders once itself; a run that stopped
before that is rendered by hand with CRITERION_DIR
($CARGO_TARGET_DIR/criterion).
"""
import json, os, statistics, subprocess, sys, datetime
summary = sys.argv[1]
criterion = sys.argv[2] if len(sys.argv) > 2 else None
load = lambda name: json.load(open(os.path.join(summary, name)))
http, nats, batch, mem, rec = (load(n) for n in ("http.json", "nats.json", "batch.json", "memory.json", "recovery.json"))
peers = [json.loads(l) for l in open(os.path.join(summary, "peers.jsonl")) if l.strip()]
# Runs from before the allocation probe have no allocations.json.
allocs = load("allocations.json") if os.path.exists(os.path.join(summary, "allocations.json")) else None
cores = os.cpu_count()
mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30

def peer(name, clients):
    runs = [p for p in peers if p["peer"] == name and p["clients"] == clients]
    return (statistics.median(p["tps"] for p in runs), statistics.median(p["p99_ms"] for p in runs), runs[0].get("conditions", ""), runs[0].get("version", ""))

def ok(flag):
    if flag is None: return "**not measured** (see the memory section)"
    return "met" if flag else "**not met**"

# The run's hot-path medians in ns, by criterion's folder name. Only this
# run's benchmarks: criterion keeps older estimates around, so they are
# read from its directory only if this run made them (criterion.txt), and
# only once (criterion.json).
saved_crit = os.path.join(summary, "criterion.json")
def crit_medians(paths):
    if os.path.exists(saved_crit):
        return json.load(open(saved_crit))
    if not os.path.exists(os.path.join(summary, "criterion.txt")):
        return {}
    if criterion is None:
        print("report.py: this run made the benchmarks but their medians were never"
              " saved; give CRITERION_DIR to read them", file=sys.stderr)
        return {}
    medians, missing = {}, []
    for path in paths:
        try:
            e = json.load(open(os.path.join(criterion, path, "new", "estimates.json")))
        except OSError:
            missing.append(path)
            continue
        medians[path] = e["median"]["point_estimate"]
    if missing:
        print(f"report.py: no estimates in {criterion} for: {', '.join(missing)}", file=sys.stderr)
    # Saved only if something was found: a wrong CRITERION_DIR must not
    # leave an empty file that every later rendering would trust.
    if medians:
        with open(saved_crit, "w") as f:
            json.dump(medians, f, indent=1, sort_keys=True)
    return medians

def fmt_us(us, ms_digits=1):
    # A pause in ms, or in µs when under one (a 20 µs call is not "0.0 ms").
    return f"{us/1000:.{ms_digits}f} ms" if us >= 1000 else f"{us:.0f} µs"

def fmt_ns(ns):
    if ns is None: return "not run"
    return f"{ns/1e6:.2f} ms" if ns >= 1e6 else f"{ns/1e3:.2f} µs" if ns >= 1e3 else f"{ns:.0f} ns"

n256, n64 = nats["engine-256"], nats["engine-64"]
r256 = n256["rate"] / nats["null-256"]["rate"]
r64 = n64["rate"] / nats["null-64"]["rate"]
rhttp = http["engine"]["rate"] / http["null"]["rate"]
pg64, pg256 = peer("postgres", 64), peer("postgres", 256)
rd64, rd256 = peer("redis", 64), peer("redis", 256)
# The durable do-nothing responders (runs from before them have none):
# the do-nothing doors whose answers wait for a group commit to a file of
# their own, so the ceiling of any engine that answers after an fsync here.
# Every rate target is set against them below: what it asks of the engine
# as a share of the do-nothing door, beside the share a durable door with
# no state reached on this machine and disk.
FAILED_MAX = 0.001
def share(figure, ceiling):
    # A run with failed requests measures failures, not a door: no share.
    if figure["failed"] >= FAILED_MAX or ceiling["failed"] >= FAILED_MAX:
        return None
    return figure["rate"] / ceiling["rate"]
def fmt_share(x):
    return "n/a (failed requests)" if x is None else f"{x:.2f}x"
def reach(asked, reached):
    return "n/a" if reached is None else ("yes" if asked <= reached else "**no**")

def publisher_under_batch():
    """How the publisher kept up under the batch load, from the runs' counters
    (summaries from before they were kept have none)."""
    parts = []
    for name, label in (("engine", "JSON"), ("engine_protobuf", "protobuf")):
        runs = batch.get(name, {}).get("publisher")
        if not runs:
            continue
        committed = sum(r["committed"] for r in runs)
        published = sum(r["published"] for r in runs)
        read_back = sum(r["read_back"] for r in runs)
        lag = max(r["lag_at_end"] for r in runs)
        parts.append(f"in {label}, {published:,.0f} events published while {committed:,.0f} were committed, "
                     f"{read_back:,.0f} of them read back from the log, and at most {lag:,.0f} not yet published when a run ended")
    if not parts:
        return ""
    return ("\nThe event publisher under the batch load, over all runs of each encoding: "
            + "; ".join(parts) + ".\n")

def ceiling_section(pb):
    lines, ask_rows = [], []
    if "fsync-256" in nats:
        for vus in (256, 64):
            null = nats[f"null-{vus}"]
            cells = []
            for target in ("fsync", "fsync-events", "engine"):
                g = nats[f"{target}-{vus}"]
                cells.append(f"{g['rate']:.0f}/s ({fmt_share(share(g, null))}), p99 {g['p99_ms']:.1f} ms")
            lines.append(f"| NATS, {vus} in flight | {null['rate']:.0f}/s | " + " | ".join(cells) + " |")
        asks = [("NATS earn, 256 in flight", 0.8, 256),
                ("10x PostgreSQL, 64 in flight", 10 * pg64[0] / nats["null-64"]["rate"], 64),
                ("10x PostgreSQL, 256 in flight", 10 * pg256[0] / nats["null-256"]["rate"], 256),
                ("1.5x Redis, 64 in flight", 1.5 * rd64[0] / nats["null-64"]["rate"], 64),
                ("1.5x Redis, 256 in flight", 1.5 * rd256[0] / nats["null-256"]["rate"], 256)]
        for name, asked, vus in asks:
            reached = share(nats[f"fsync-events-{vus}"], nats[f"null-{vus}"])
            ask_rows.append(f"| {name} | {asked * nats[f'null-{vus}']['rate']:.0f}/s | {asked:.2f}x | {fmt_share(reached)} | {reach(asked, reached)} |")
        p99 = nats["fsync-events-64"]["p99_ms"]
        ask_rows.append(f"| NATS p99 ≤ 5 ms at 64 in flight | | | p99 {p99:.1f} ms | {'yes' if p99 <= 5 else '**no**'} |")
    fb = batch.get("fsync-events")
    if fb and pb:
        fbp = batch["fsync-events_protobuf"]
        # A batch row's rate is of earns, not of requests.
        earns = lambda g: {"rate": g["earns_rate"], "failed": g["failed"]}
        j = share(earns(fb), earns(batch["null"]))
        p = share(earns(fbp), earns(batch["null_protobuf"]))
        lines.append(f"| NATS batch ({batch['batch']} earns per request, {batch['vus']} in flight), JSON / protobuf | {batch['null']['earns_rate']:.0f} / {batch['null_protobuf']['earns_rate']:.0f} earns/s | | {fb['earns_rate']:.0f} / {fbp['earns_rate']:.0f} earns/s ({fmt_share(j)} / {fmt_share(p)}) | {batch['engine']['earns_rate']:.0f} / {pb['earns_rate']:.0f} earns/s ({batch['engine']['earns_rate']/batch['null']['earns_rate']:.2f}x / {pb['earns_rate']/batch['null_protobuf']['earns_rate']:.2f}x) |")
        asked = 500_000 / batch["null_protobuf"]["earns_rate"]
        ask_rows.append(f"| batch door, 500 000 earns/s (protobuf) | 500000/s | {asked:.2f}x | {fmt_share(p)} | {reach(asked, p)} |")
    if "fsync" in http:
        hf = http["fsync"]
        reached = share(hf, http["null"])
        lines.append(f"| HTTP, {http['vus']} connections | {http['null']['rate']:.0f}/s | {hf['rate']:.0f}/s ({fmt_share(reached)}), p99 {hf['p99_ms']:.1f} ms | | {http['engine']['rate']:.0f}/s ({rhttp:.2f}x), p99 {http['engine']['p99_ms']:.1f} ms |")
        ask_rows.append(f"| HTTP earn, {http['vus']} connections | {0.8 * http['null']['rate']:.0f}/s | 0.80x | {fmt_share(reached)} | {reach(0.8, reached)} |")
    if not lines:
        return ""
    return f"""
## What a durable door reaches on this machine

The durable do-nothing responders are the do-nothing ones whose answers
wait for a group commit of their requests and answers (one write and one
`fdatasync` per group of at most as many earns as the engine's write
batch, into a preallocated file overwritten as a ring, the cheapest
durable write found on this disk; no RocksDB, no state, no idempotency,
no actors, no authentication), once alone and once also publishing one
event per earn on a connection of their own, as the engine does
(`benches/src/durable.rs`). They are measured in the same run as the rows
above, alternating with them, and are the ceiling of any engine that
answers after an fsync on these {cores} shared cores and this disk.

| door | do-nothing | durable do-nothing (fsync) | durable do-nothing (fsync, publishing) | engine |
|---|---|---|---|---|
""" + "\n".join(lines) + """

Each target as the share of the do-nothing responder it asks of the engine
at the same in flight, beside the share the durable do-nothing responder
reached in this run (publishing, over NATS; fsync alone, over HTTP):

| target | rate it asks | share of do-nothing | durable do-nothing reached | within reach of a durable door here |
|---|---|---|---|---|
""" + "\n".join(ask_rows) + "\n"

# The resident set is measured "settled" (memory_probe's module doc):
# RocksDB's memtables flushed and both allocators' free pages given back,
# then less RocksDB's block cache and table readers, which are filled
# memory. A figure below zero would still mean the subtraction said
# nothing: the RSS half of the target is then not measured rather than met.
rss_active = mem["settled_rss_less_rocksdb_bytes_per_active"]
rss_passive = mem["settled_rss_less_rocksdb_bytes_per_passivated"]
def within(figure, bound):
    return None if figure < 0 else figure <= bound
def both(heap_ok, rss_ok):
    return False if not heap_ok or rss_ok is False else rss_ok
subtraction_note = "" if min(rss_active, rss_passive) >= 0 else (
    " In this run a settled \"less RocksDB\" figure came out below zero, so"
    " the resident half of the target is not measured; the live heap is the"
    " exact figure.")
above_heap = "" if rss_active <= mem["heap_bytes_per_active"] else (
    f" The active figure is {rss_active - mem['heap_bytes_per_active']:.0f} B above the live heap:"
    " the allocator's size classes and partly filled pages.")
mem_ok = both(mem["heap_bytes_per_active"] <= 1024, within(rss_active, 1024))
passive_ok = both(mem["heap_bytes_per_passivated"] <= 64, within(rss_passive, 64))

# Older summaries do not say how many enrollments the HTTP load used.
http_enrollments = f", {http['enrollments']:,} enrollments" if "enrollments" in http else ""

# Older summaries have the JSON batch only; newer ones also the protobuf one.
pb = batch.get("engine_protobuf")
batch_best = max(batch["engine"]["earns_rate"], pb["earns_rate"] if pb else 0)
batch_value = (f"{pb['earns_rate']:.0f} earns/s in protobuf, {batch['engine']['earns_rate']:.0f} in JSON (do-nothing: {batch['null_protobuf']['earns_rate']:.0f} and {batch['null']['earns_rate']:.0f})"
  if pb else f"{batch['engine']['earns_rate']:.0f} earns/s (do-nothing: {batch['null']['earns_rate']:.0f})")
batch_pb_row = (f"\n| NATS batch in protobuf (same) | {batch['vus']} requests | {batch['null_protobuf']['earns_rate']:.0f} earns/s | {pb['earns_rate']:.0f} earns/s | {pb['earns_rate']/batch['null_protobuf']['earns_rate']:.2f}x | | {pb['p99_ms']:.0f} ms per batch |"
  if pb else "")

rows = [
  ("NATS earn, 256 in flight, events published", f"{n256['rate']:.0f}/s vs do-nothing {nats['null-256']['rate']:.0f}/s = **{r256:.2f}x**", "≥ 0.8x", ok(r256 >= 0.8)),
  ("HTTP earn, 64 connections", f"{http['engine']['rate']:.0f}/s vs do-nothing {http['null']['rate']:.0f}/s = **{rhttp:.2f}x**", "≥ 0.8x", ok(rhttp >= 0.8)),
  ("vs PostgreSQL, 64 in flight", f"{n64['rate']:.0f} vs {pg64[0]:.0f} tx/s = **{n64['rate']/pg64[0]:.1f}x**", "≥ 10x", ok(n64['rate']/pg64[0] >= 10)),
  ("vs PostgreSQL, 256 in flight", f"{n256['rate']:.0f} vs {pg256[0]:.0f} tx/s = **{n256['rate']/pg256[0]:.1f}x**", "≥ 10x", ok(n256['rate']/pg256[0] >= 10)),
  ("vs Redis, 64 in flight", f"{n64['rate']:.0f} vs {rd64[0]:.0f} ops/s = **{n64['rate']/rd64[0]:.1f}x**", "≥ 1.5x", ok(n64['rate']/rd64[0] >= 1.5)),
  ("vs Redis, 256 in flight", f"{n256['rate']:.0f} vs {rd256[0]:.0f} ops/s = **{n256['rate']/rd256[0]:.1f}x**", "≥ 1.5x", ok(n256['rate']/rd256[0] >= 1.5)),
  ("NATS p99 at 64 in flight", f"{n64['p99_ms']:.1f} ms", "≤ 5 ms", ok(n64['p99_ms'] <= 5)),
  (f"batch door ({batch['batch']} earns per request, {batch['vus']} in flight)", batch_value, "≥ 500 000/s", ok(batch_best >= 500_000)),
  (f"memory per active enrollment ({mem['enrollments']:,})", f"heap {mem['heap_bytes_per_active']:.0f} B; settled RSS {rss_active:.0f} B less RocksDB's memory ({mem['settled_rss_bytes_per_active']:.0f} B with it)", "≤ 1 KiB", ok(mem_ok)),
  ("memory per passivated enrollment", f"heap {mem['heap_bytes_per_passivated']:.1f} B; settled RSS {rss_passive:.0f} B less RocksDB's memory ({mem['settled_rss_bytes_per_passivated']:.0f} B with it)", "≈ 0 (≤ 64 B of heap and of RSS)", ok(passive_ok)),
  (f"recovery of {rec['events']:,} events ({rec['data_bytes']/2**30:.2f} GiB)", f"{rec['ready_s']:.2f} s to ready", "≤ 10 s", ok(rec['ready_s'] <= 10)),
]
bench_names = [
  # Criterion names the folder of a lone bench_function after its id with
  # "/" made "_"; a group's benchmarks get a folder per group.
  ("decide one earn (no I/O)", "decide_earn"), ("snapshot encode", "snapshot_encode"), ("snapshot decode", "snapshot_decode"),
  ("retention check of an idempotency record (compactions)", "retention_check"),
  ("new key checked and noted in an enrollment's key digests (30-day retention)", "key_digests/new_key_aging"),
  ("the same, digests kept for ever (no retention)", "key_digests/new_key_kept_for_ever"),
  ("JSON decode of an earn", "json_earn_decode"), ("JSON encode of the answer", "json_answer_encode"),
  ("JSON of an earned event, written by serde (the reference)", "event_json/serde"),
  ("the same bytes, written by hand (what the publisher sends)", "event_json/by_hand"),
  ("batch of 1 000 earns: JSON decode", "batch/json_decode"), ("batch of 1 000 earns: protobuf decode", "batch/protobuf_decode"),
  ("1 000 batch answers: JSON encode", "batch/json_encode"), ("1 000 batch answers: protobuf encode", "batch/protobuf_encode"),
  ("commit thread filling a write batch made with room for 4 096 earns (no write)", "write_batch/sized"),
  ("group commit, 1 event (one fsync)", "group_commit/1"), ("group commit, 256 events", "group_commit/256"),
  ("group commit, 4096 events", "group_commit/4096"),
  ("publisher: 1 000 events just written, read back from the log", "publisher/read_back"),
  ("publisher: the same 1 000, handed over in memory", "publisher/from_memory"),
  ("baseline: empty actix round trip", "actor/baseline_noop"),
  ("earn round trip, no fsync", "actor/round_trip_unsafe_no_fsync"), ("earn round trip, fsync", "actor/round_trip_fsync")]
medians = crit_medians([path for _, path in bench_names])
bench_rows = [(name, fmt_ns(medians.get(path))) for name, path in bench_names]

release_note = ("" if "thorough_release_max_us" not in mem else
  f" A shard gives the freed pages back to the system after passivating: thoroughly\n"
  f"  (a forced allocator collect) once it has served no command for a tick, whose\n"
  f"  longest call took {fmt_us(mem['thorough_release_max_us'])} of a shard thread; cheaply while it serves\n"
  f"  (longest {fmt_us(mem['cheap_release_max_us'])}).")
if "passivation_ping_max_us" in mem:
  release_note += (
    f" While the actors passivated, {mem['passivation_pingers']} pingers (as many on each shard) each asked\n"
    f"  about once a millisecond; their {mem['passivation_pings']:,} queries from the moment the first\n"
    f"  actors could be idle waited at most\n"
    f"  {fmt_us(mem['passivation_ping_max_us'])} for their answer (p99 {fmt_us(mem['passivation_ping_p99_us'], 2)}): how long the\n"
    f"  passivation wave held up a command.")

# The day of the run and the commit it measured, not this rendering's:
# the page is rendered again when only the notes change. run.json is
# written by run-all once its figures are all in (day in UTC, from the
# run's start); a run from before it has none, and then the NATS figures'
# file time stands for the day.
run_info = {}
if os.path.exists(os.path.join(summary, "run.json")):
    run_info = load("run.json")
run_day = run_info.get("day") or datetime.datetime.fromtimestamp(
    os.path.getmtime(os.path.join(summary, "nats.json")), datetime.timezone.utc).date()
measured = ""
if run_info.get("commit"):
    measured = f" from commit `{run_info['commit']}`" + (" with uncommitted changes" if run_info.get("dirty") else "")

out = f"""# Performance

Written by `loadtests/run-all` on {run_day}{measured} — do not edit by hand;
the analysis at the end comes from `loadtests/PERFORMANCE-notes.md`.

**Conditions.** One machine: {cores} cores, {mem_gib:.0f} GiB, one virtual disk.
The engine, nats-server, the load generators, PostgreSQL and Redis all
share the {cores} cores; every figure of one table was measured in the same
run. **Durable everywhere**: the engine answers after the fsync of its
write-ahead log; PostgreSQL with `{pg64[2]}`; Redis with `{rd64[2]}`.
Load figures are medians of {http['runs']} runs.

## Targets

| target | measured | wanted | |
|---|---|---|---|
""" + "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows) + f"""

## The doors beside their ceilings

| door | in flight | do-nothing responder | engine | ratio | engine p50 | engine p99 |
|---|---|---|---|---|---|---|
| HTTP (k6 {http['k6']}, closed model{http_enrollments}) | {http['vus']} | {http['null']['rate']:.0f}/s | {http['engine']['rate']:.0f}/s | {rhttp:.2f}x | {http['engine']['p50_ms']:.2f} ms | {http['engine']['p99_ms']:.2f} ms |
| NATS (`nats_load`, events published, {nats.get('enrollments', 200):,} enrollments) | 256 | {nats['null-256']['rate']:.0f}/s | {n256['rate']:.0f}/s | {r256:.2f}x | {n256['p50_ms']:.2f} ms | {n256['p99_ms']:.2f} ms |
| NATS | 64 | {nats['null-64']['rate']:.0f}/s | {n64['rate']:.0f}/s | {r64:.2f}x | {n64['p50_ms']:.2f} ms | {n64['p99_ms']:.2f} ms |
| NATS batch in JSON ({batch['batch']} earns per request, {batch['enrollments']:,} enrollments) | {batch['vus']} requests | {batch['null']['earns_rate']:.0f} earns/s | {batch['engine']['earns_rate']:.0f} earns/s | {batch['engine']['earns_rate']/batch['null']['earns_rate']:.2f}x | | {batch['engine']['p99_ms']:.0f} ms per batch |{batch_pb_row}

Per-run figures: `docs/PERFORMANCE-http.md`, `docs/PERFORMANCE-nats.md`.
{publisher_under_batch()}{ceiling_section(pb)}
## Peers on the same work (one earn: a ledger row and a balance, durably)

| peer | clients | tx/s | p99 | engine over NATS, same in flight |
|---|---|---|---|---|
| PostgreSQL {pg64[3]} (pgbench, one transaction: insert ledger row with unique idempotency key + update balance) | 64 | {pg64[0]:.0f} | {pg64[1]:.1f} ms | {n64['rate']:.0f}/s ({n64['rate']/pg64[0]:.1f}x) |
| PostgreSQL | 256 | {pg256[0]:.0f} | {pg256[1]:.1f} ms | {n256['rate']:.0f}/s ({n256['rate']/pg256[0]:.1f}x) |
| Redis {rd64[3]} (redis-benchmark, Lua: add to balance + append to a stream) | 64 | {rd64[0]:.0f} | {rd64[1]:.1f} ms | {n64['rate']:.0f}/s ({n64['rate']/rd64[0]:.1f}x) |
| Redis | 256 | {rd256[0]:.0f} | {rd256[1]:.1f} ms | {n256['rate']:.0f}/s ({n256['rate']/rd256[0]:.1f}x) |

The engine's figure is its NATS earn (idempotency record, event published),
the peers' their own clients over TCP; all three share the machine with
their load generator, and spread the earns over as many enrollments
(accounts) as the NATS load.

## Memory and recovery

- `memory_probe` made {mem['enrollments']:,} enrollments active (one durable
  earn each, {mem['activate_s']:.0f} s): live heap {mem['heap_bytes_per_active']:.0f} B and resident
  set {mem['rss_bytes_per_active']:.0f} B per active enrollment. After all of them
  passivated: heap {mem['heap_bytes_per_passivated']:.1f} B and RSS {mem['rss_bytes_per_passivated']:.0f} B per enrollment above
  the (settled) start. That running RSS includes RocksDB's block cache
  and the memtables filled since the last settling (by the earns, then
  by the passivation snapshots), bounded by configuration rather than by
  the number of enrollments. So the probe also measures each point
  *settled*: memtables flushed and compactions done, the C library's
  allocator (RocksDB's) made to give its free pages back, then less what
  RocksDB still reports holding (its block cache, table readers and
  fresh memtables: {mem['settled_rocksdb_before_bytes']/2**20:.0f} MiB before,
  {mem['settled_rocksdb_active_bytes']/2**20:.0f} MiB with all active, {mem['settled_rocksdb_passivated_bytes']/2**20:.0f} MiB after passivation). Settled,
  an active enrollment costs {rss_active:.0f} B of resident memory and a passivated one
  {rss_passive:.0f} B.{above_heap}{subtraction_note}{release_note}
- `loyalty serve` on a data directory of {rec['events']:,} events ({rec['data_bytes']/2**30:.2f} GiB),
  full log check at start-up: ready after {rec['ready_s']:.2f} s (median; runs:
  {', '.join(f'{t:.2f}' for t in rec['runs_s'])} s).
""" + ("" if allocs is None else f"""- `alloc_probe`: heap allocations of one durable earn in the engine (its
  shards and commit thread; RocksDB's own and the front doors' not
  counted), over {allocs['enrollments']:,} active enrollments, {allocs['rounds']} earns each:
  {allocs['single']['engine_allocations']:.2f} ({allocs['single']['engine_bytes']:.0f} bytes) for a single earn, {allocs['inflight']} in flight;
  {allocs['batched']['engine_allocations']:.2f} ({allocs['batched']['engine_bytes']:.0f} bytes) per earn in batches of {allocs['batch']:,}. The caller's side
  (request, answer channel, waiting) {allocs['single']['caller_allocations']:.2f} and {allocs['batched']['caller_allocations']:.2f}. A count, not a
  time: it does not move with the machine's hour.
""") + """
## Hot path (criterion, `cargo bench --workspace --bench hot_path`, median)

| benchmark | time |
|---|---|
""" + "\n".join(f"| {a} | {b} |" for a, b in bench_rows) + "\n\n" + open("loadtests/PERFORMANCE-notes.md").read()
open("docs/PERFORMANCE.md", "w").write(out)
print(out)
