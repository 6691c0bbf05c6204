"""Figures both A/B scripts (ab-nats, ab-http) print.

- A build's range and median of one figure over its runs (`span`).
- An engine's CPU split by thread (`split`, `line`, `medians`). A
  process's total CPU per earn moves with this machine's speed from run to
  run; the split shows where a change moved it (say, from RocksDB's flush
  thread onto the commit thread, which every answer waits on). The listings
  are `thread_ticks` output (scripts/lib.sh), taken before and after the
  measured load.
"""
import os
import statistics

# Below this many microseconds per unit of work a thread is not printed.
SHOWN_US_MIN = 0.05


def span(runs, key, fmt):
    """`min-max (median m)` of figure `key` over runs (dicts), each value
    formatted with `fmt`."""
    values = [run[key] for run in runs]
    return f"{fmt.format(min(values))}-{fmt.format(max(values))} (median {fmt.format(statistics.median(values))})"


def read(path):
    """NAME<TAB>TICKS lines into a dict."""
    with open(path) as listing:
        return {name: int(ticks) for name, ticks in
                (line.rstrip("\n").split("\t") for line in listing if line.strip())}


def split(before_path, after_path, units):
    """Microseconds of CPU per unit of work (an earn, a request), by thread
    name, between the two listings. A thread that started in between
    counts from zero; one that ended takes its ticks with it, so its
    group's figure is too low then (never below zero: it is clamped)."""
    hz = os.sysconf("SC_CLK_TCK")
    before, after = read(before_path), read(after_path)
    return {name: max(ticks - before.get(name, 0), 0) / hz * 1e6 / max(units, 1)
            for name, ticks in after.items()}


def line(threads):
    """The split as one line, largest first."""
    shown = sorted(((us, name) for name, us in threads.items() if us >= SHOWN_US_MIN), reverse=True)
    return "  ".join(f"{name} {us:.2f}" for us, name in shown)


def medians(runs):
    """Each thread's median over runs (each a dict from `split`)."""
    names = {name for run in runs for name in run}
    return {name: statistics.median(run.get(name, 0.0) for run in runs) for name in names}
