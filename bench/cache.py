"""The SSD cache, side by side: its policy against LRU and libCacheSim, its sizing against the exact answer.

1. Hit ratio of LfuAging (with its adaptive recency window, and strict: window=False) against LRU on
   skewed (Zipf alpha 0.8, 1.0, 1.2), scan-mixed (Zipf + sequential scans of blocks never seen
   before) and recency (a working set that jumps or slides) traces, at three cache sizes each; with
   SSD writes (blocks stored) per access, since an SSD wears by writes.
2. The same traces through libCacheSim's LRU, LFU and ARC (its C simulator, fed the trace as an
   oracleGeneral binary file); our LRU must match libCacheSim's exactly.
3. The exact miss-ratio curve against libCacheSim's LRU miss ratio at several sizes of one trace.
4. Exact against SHARDS on a 10,000,000-access trace: mean absolute error over 100 sizes and the
   speed ratio (exact: one run; SHARDS: best of 3), at rates 0.01 and 0.001.
Every trace is generated from a fixed seed. Writes bench/results/cache.json.
Usage: python bench/cache.py [--quick]   (--quick: 200,000-access traces and 1,000,000 for SHARDS, ~2 min)
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import struct
import sys
import tempfile
import time
from array import array
from pathlib import Path

from appliance.runner.atomic import atomic_write
from appliance.storage import mrc
from appliance.storage.cachepolicy import LfuAging, Lru
from appliance.storage.traces import parse_trace

RESULTS = Path(__file__).resolve().parent / "results" / "cache.json"
WORKING_SET = 4_000  # the recency traces' working set, in blocks
LIBCACHESIM_POLICIES = ("LRU", "LFU", "ARC")


def zipf(blocks: int, accesses: int, alpha: float, seed: int) -> array:
    """Zipf-distributed accesses over `blocks` blocks whose popularity rank is shuffled over the disk."""
    rng = random.Random(seed)
    weights = list(itertools.accumulate(1 / (rank + 1) ** alpha for rank in range(blocks)))
    place = list(range(blocks))
    rng.shuffle(place)
    return array("q", (place[rank] for rank in rng.choices(range(blocks), cum_weights=weights, k=accesses)))


def scan_mixed(blocks: int, accesses: int, seed: int, every: int = 20_000, length: int = 5_000) -> array:
    """Zipf (alpha 0.9), and after every `every` accesses a sequential scan of `length` new blocks."""
    base = zipf(blocks, accesses, 0.9, seed)
    out, fresh = array("q"), 10 * blocks
    for start in range(0, accesses, every):
        out.extend(base[start:start + every])
        out.extend(range(fresh, fresh + length))
        fresh += length
    return out[:accesses]


def recency(accesses: int, phase: int, step: int, seed: int) -> array:
    """Uniform accesses to a working set of WORKING_SET blocks that moves `step` blocks on every `phase` accesses."""
    rng = random.Random(seed)
    out, start = array("q"), 0
    while len(out) < accesses:
        out.extend(start + rng.randrange(WORKING_SET) for _ in range(phase))
        start += step
    return out[:accesses]


def traces(quick: bool) -> list[tuple[str, str, array, list[int]]]:
    accesses, blocks = (200_000, 20_000) if quick else (1_000_000, 100_000)
    skewed_sizes = [blocks // 100, blocks // 20, blocks // 10]
    recency_sizes = [WORKING_SET // 2, WORKING_SET, 2 * WORKING_SET]
    return [
        ("zipf-0.8", "skewed", zipf(blocks, accesses, 0.8, 1), skewed_sizes),
        ("zipf-1.0", "skewed", zipf(blocks, accesses, 1.0, 2), skewed_sizes),
        ("zipf-1.2", "skewed", zipf(blocks, accesses, 1.2, 3), skewed_sizes),
        ("scan-mixed", "skewed", scan_mixed(blocks, accesses, 4), skewed_sizes),
        ("recency-jump", "recency", recency(accesses, 50_000, WORKING_SET, 5), recency_sizes),
        ("recency-slide", "recency", recency(accesses, 2_000, 200, 6), recency_sizes),
    ]


def simulate(policy, trace: array) -> tuple[float, float]:
    """(hit ratio, blocks stored per access)."""
    access = policy.access
    for block in trace:
        access(block)
    return policy.hits / len(trace), policy.admissions / len(trace)


def libcachesim_or_none():
    try:
        import libcachesim
    except ImportError:
        return None
    return libcachesim


def oracle_general(trace: array, path: Path) -> Path:
    """The trace as libCacheSim's oracleGeneral binary: (time u32, id u64, size u32, next access i64) per request."""
    record = struct.Struct("<IQIq")
    with path.open("wb") as handle:
        for start in range(0, len(trace), 100_000):
            handle.write(b"".join(record.pack(start + n, block, 1, -1)
                                  for n, block in enumerate(trace[start:start + 100_000])))
    return path


def libcachesim_miss_ratio(lcs, policy: str, size: int, path: Path) -> float:
    reader = lcs.TraceReader(trace=str(path), trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE)
    return getattr(lcs, policy)(cache_size=size).process_trace(reader)[0]


def policies(quick: bool, lcs, work: Path) -> list[dict]:
    rows = []
    print(f"{'trace':<14} {'size':>6}  {'LRU':>6} {'LFU-aging':>9} {'(pts)':>6} {'strict':>6} {'(pts)':>6}  "
          + " ".join(f"{'lcs ' + p:>8}" for p in LIBCACHESIM_POLICIES)
          + f"  {'SSD writes/access: aging strict LRU':>36}")
    for name, kind, trace, sizes in traces(quick):
        binary = oracle_general(trace, work / f"{name}.bin") if lcs else None
        for size in sizes:
            lru_hit, lru_writes = simulate(Lru(size), trace)
            aging_hit, aging_writes = simulate(LfuAging(size), trace)
            strict_hit, strict_writes = simulate(LfuAging(size, window=False), trace)
            others = {p: 1 - libcachesim_miss_ratio(lcs, p, size, binary) for p in LIBCACHESIM_POLICIES} if lcs else {}
            row = {"trace": name, "kind": kind, "accesses": len(trace), "size_blocks": size, "lru": lru_hit,
                   "lfu_aging": aging_hit, "lfu_aging_strict": strict_hit,
                   "points_over_lru": round(100 * (aging_hit - lru_hit), 2),
                   "strict_points_over_lru": round(100 * (strict_hit - lru_hit), 2),
                   "ssd_writes_per_access": {"lfu_aging": aging_writes, "lfu_aging_strict": strict_writes,
                                             "lru": lru_writes},
                   "libcachesim_hit_ratio": others,
                   "lru_equals_libcachesim": (abs(others["LRU"] - lru_hit) < 1e-12) if lcs else None}
            rows.append(row)
            print(f"{name:<14} {size:>6}  {lru_hit:>6.3f} {aging_hit:>9.3f} {row['points_over_lru']:>+6.1f} "
                  f"{strict_hit:>6.3f} {row['strict_points_over_lru']:>+6.1f}  "
                  + " ".join(f"{others.get(p, float('nan')):>8.3f}" for p in LIBCACHESIM_POLICIES)
                  + f"  {aging_writes:>22.2f} {strict_writes:>6.2f} {lru_writes:>4.2f}", flush=True)
    return rows


def exact_against_libcachesim(quick: bool, lcs, work: Path) -> list[dict]:
    trace = zipf(20_000 if quick else 100_000, 200_000 if quick else 1_000_000, 1.0, 2)
    binary = oracle_general(trace, work / "exact-vs-lcs.bin")
    curve = mrc.exact_mrc(trace)
    rows = []
    print("\nexact MRC vs libCacheSim LRU (zipf-1.0): size, exact miss ratio, libCacheSim miss ratio")
    for size in (10, 100, 1_000, 5_000, 10_000, 50_000):
        theirs = libcachesim_miss_ratio(lcs, "LRU", size, binary)
        rows.append({"size_blocks": size, "exact": curve.miss_ratio(size), "libcachesim_lru": theirs,
                     "difference": abs(curve.miss_ratio(size) - theirs)})
        print(f"  {size:>7} {curve.miss_ratio(size):.6f} {theirs:.6f}")
    return rows


def exact_against_shards(quick: bool) -> dict:
    accesses, blocks = (1_000_000, 100_000) if quick else (10_000_000, 1_000_000)
    started = time.perf_counter()
    trace = zipf(blocks, accesses, 0.9, 7)
    print(f"\nexact vs SHARDS: {accesses:,} accesses, Zipf 0.9 over {blocks:,} blocks "
          f"(generated in {time.perf_counter() - started:.1f} s)", flush=True)
    started = time.perf_counter()
    exact = mrc.exact_mrc(trace)
    exact_seconds = time.perf_counter() - started
    sizes = mrc.even_sizes(exact.distinct)
    out = {"accesses": accesses, "distinct_blocks": exact.distinct, "exact_seconds": exact_seconds, "rates": []}
    print(f"  exact: {exact_seconds:.1f} s ({exact_seconds / accesses * 1e6:.2f} us per access)", flush=True)
    for rate in (0.01, 0.001):
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            curve = mrc.shards_mrc(trace, rate)
            runs.append(time.perf_counter() - started)
        error = mrc.mean_absolute_error(exact, curve, sizes)
        entry = {"rate": curve.sample_rate, "sampled_accesses": curve.sampled, "seconds": min(runs),
                 "speedup": exact_seconds / min(runs), "mean_absolute_error": error,
                 "distinct_estimate": curve.distinct}
        out["rates"].append(entry)
        print(f"  SHARDS R={rate}: {min(runs):.3f} s, {entry['speedup']:.0f}x faster, MAE {error:.4f} over "
              f"{len(sizes)} sizes ({curve.sampled:,} accesses sampled)", flush=True)
    lines = [f"{n * 0.001:.3f},{block * 4096},4096,r" for n, block in enumerate(trace[:1_000_000])]
    started = time.perf_counter()
    parse_trace(lines, "csv")
    out["parse_seconds_per_million_csv_lines"] = (time.perf_counter() - started) * 1_000_000 / len(lines)
    print(f"  (reading a trace: {out['parse_seconds_per_million_csv_lines']:.1f} s per million csv lines)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller traces: a smoke run")
    args = parser.parse_args()
    lcs = libcachesim_or_none()
    if lcs is None:
        print("libcachesim is not installed (pip install libcachesim): its columns are left out", file=sys.stderr)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as work:
        result = {"quick": args.quick, "python": sys.version.split()[0],
                  "libcachesim": getattr(lcs, "__version__", None) if lcs else None,
                  "policies": policies(args.quick, lcs, Path(work)),
                  "exact_vs_libcachesim_lru": exact_against_libcachesim(args.quick, lcs, Path(work)) if lcs else None,
                  "exact_vs_shards": exact_against_shards(args.quick)}
    for kind in ("skewed", "recency"):
        points = [row["points_over_lru"] for row in result["policies"] if row["kind"] == kind]
        print(f"LFU-aging over LRU on {kind} traces: min {min(points):+.1f}, max {max(points):+.1f} points")
    result["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write(RESULTS, (json.dumps(result, indent=2) + "\n").encode(), 0o644)
    print(f"wrote {RESULTS} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
