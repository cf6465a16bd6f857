"""`appliance cache`: size the SSD cache from a trace of block accesses (docs/cache.md).

Start-up: appliance.cli loads this module for every command, so it imports only typer; the
analysis (storage.traces, storage.mrc, appliance.plot) is imported inside the command.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import typer

cache_app = typer.Typer(no_args_is_help=True, help="The SSD cache: how big it must be, from a trace of block accesses.")

SIZE_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # of the distinct blocks: the rows of the table
COMPARED_SIZES = 100  # the mean absolute difference is over this many evenly spaced sizes
FEW_SAMPLES = 10_000  # below this many sampled accesses SHARDS' curve is rough


@cache_app.command("analyze")
def analyze(
    trace: Path = typer.Argument(..., help="The trace: an own access log, MSR Cambridge CSV or time,offset,size[,op] "
                                 "CSV (.gz is read through gzip)."),
    fmt: str = typer.Option("auto", "--format", help="auto, own, msr or csv (docs/cache.md describes each)."),
    block_size: Optional[int] = typer.Option(None, "--block-size", help="Cache block in bytes [default: 4096; an "
                                             "own log's header sets its own]."),
    target: float = typer.Option(0.9, "--target", help="The hit ratio wanted, above 0 and at most 1."),
    sample_rate: float = typer.Option(0.01, "--sample-rate", help="SHARDS' sampling rate, 1/65536 to 1."),
    exact: bool = typer.Option(True, "--exact/--no-exact", help="Also compute the exact curve: 2-4 s per "
                               "million accesses, where SHARDS takes a hundredth of that."),
    png: Optional[Path] = typer.Option(None, "--png", help="Also draw the curves into this PNG file.", dir_okay=False),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count lines that do not parse, instead of "
                                  "stopping at the first."),
    reads_only: bool = typer.Option(False, "--reads-only", help="Count reads only (a write-around cache)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Miss-ratio curves of an LRU cache (exact, and SHARDS' estimate) at a few sizes, and the smallest
    cache that reaches --target. Reads the trace; changes nothing but the --png file."""
    from appliance.output import run_action

    document = run_action(as_json, lambda: analyze_trace(trace, fmt=fmt, block_size=block_size, target=target,
                                                          sample_rate=sample_rate, exact=exact, png=png,
                                                          skip_bad=skip_bad, reads_only=reads_only))
    print(json.dumps(document, indent=2, sort_keys=True) if as_json else render_analysis(document))


def analyze_trace(trace: Path, *, fmt: str, block_size: int | None, target: float, sample_rate: float, exact: bool,
                  png: Path | None, skip_bad: bool, reads_only: bool) -> dict[str, Any]:
    """Read the trace, compute the curves, recommend a size; the document `--json` prints."""
    from appliance.core.reports import Report, ReportError
    from appliance.storage import mrc, traces

    _check_flags(fmt, block_size, target, sample_rate, png)
    try:
        started = time.perf_counter()
        read = traces.read_trace(trace, fmt, block_size, skip_bad=skip_bad, reads_only=reads_only)
        read_seconds = time.perf_counter() - started
    except traces.TraceError as exc:
        raise ReportError([Report("VALUE_INVALID", exc.detail, path=exc.source, value=exc.content,
                                  fix=exc.fix)]) from None
    blocks = read.blocks
    if not blocks:
        raise ReportError([Report("VALUE_INVALID", f"no block access in the trace ({read.requests} requests, "
                                  f"{read.skipped} lines skipped)", path=str(trace),
                                  fix="check the file and --format" + ("; drop --reads-only" if reads_only else ""))])
    notes = []
    exact_curve = exact_seconds = None
    if exact:
        started = time.perf_counter()
        exact_curve = mrc.exact_mrc(blocks)
        exact_seconds = time.perf_counter() - started
    started = time.perf_counter()
    try:
        shards_curve = mrc.shards_mrc(blocks, sample_rate)
    except mrc.NoSampleError:
        if exact_curve is None:
            raise ReportError([Report("FLAG_INVALID", f"--sample-rate {sample_rate:g} sampled none of the "
                                      f"{len(blocks)} accesses", value=sample_rate,
                                      fix="give a higher --sample-rate, or leave out --no-exact")]) from None
        shards_curve = None
        notes.append(f"SHARDS at rate {sample_rate:g} sampled none of the {len(blocks)} accesses; "
                     "give a higher --sample-rate for its curve")
    shards_seconds = time.perf_counter() - started
    if shards_curve is not None and shards_curve.sampled < FEW_SAMPLES:
        notes.append(f"SHARDS followed only {shards_curve.sampled:,} accesses: its curve is rough; give a higher "
                     "--sample-rate (it needs about 10,000)")
    main = exact_curve or shards_curve
    advice = mrc.recommend(main, target, read.block_size)
    sizes = sorted({max(1, round(main.distinct * f)) for f in SIZE_FRACTIONS} | ({advice.blocks} if advice.blocks
                                                                                  else set()))
    rows = [{"blocks": s, "bytes": s * read.block_size,
             "exact_miss_ratio": _ratio(exact_curve.miss_ratio(s)) if exact_curve else None,
             "shards_miss_ratio": _ratio(shards_curve.miss_ratio(s)) if shards_curve else None} for s in sizes]
    difference = None
    if exact_curve and shards_curve:
        difference = _ratio(mrc.mean_absolute_error(exact_curve, shards_curve,
                                                    mrc.even_sizes(exact_curve.distinct, COMPARED_SIZES)))
    document = {
        "ok": True,
        "trace": {"path": str(trace), "format": read.format, "block_size": read.block_size, "requests": read.requests,
                  "accesses": len(blocks), "distinct_blocks": main.distinct if exact_curve else None,
                  "skipped_lines": read.skipped, "first_skipped": read.first_skipped, "reads_only": reads_only,
                  "seconds": round(read_seconds, 3)},
        "exact": None if exact_curve is None else {"seconds": round(exact_seconds, 3)},
        "shards": None if shards_curve is None else {
            "sample_rate": shards_curve.sample_rate, "sampled_accesses": shards_curve.sampled,
            "distinct_blocks_estimate": shards_curve.distinct, "seconds": round(shards_seconds, 3)},
        "sizes": rows,
        "mean_absolute_difference": difference,
        "compared_sizes": COMPARED_SIZES if difference is not None else None,
        "recommendation": {"curve": "exact" if exact_curve else "shards", "target_hit_ratio": target,
                           "reachable": advice.blocks is not None, "blocks": advice.blocks, "bytes": advice.bytes,
                           "hit_ratio": _ratio(advice.hit_ratio), "best_hit_ratio": _ratio(main.best_hit_ratio),
                           "best_blocks": advice.best_blocks, "best_bytes": advice.best_blocks * read.block_size},
        "png": None,
        "notes": notes,
    }
    if png is not None:
        _draw(png, exact_curve, shards_curve, target, advice.blocks, main.distinct)
        document["png"] = str(png)
    return document


def _check_flags(fmt: str, block_size: int | None, target: float, sample_rate: float, png: Path | None) -> None:
    from appliance.core.reports import Report, ReportError
    from appliance.storage import mrc

    problems = []
    if fmt not in ("auto", "own", "msr", "csv"):
        problems.append(("--format", fmt, "expected auto, own, msr or csv"))
    if block_size is not None and block_size < 1:
        problems.append(("--block-size", block_size, "expected a whole number of bytes, at least 1, such as 4096"))
    if not (0 < target <= 1):
        problems.append(("--target", target, "expected a hit ratio above 0 and at most 1, such as 0.9"))
    smallest = 1 / (1 << mrc.HASH_BITS)
    if not (smallest <= sample_rate <= 1) or math.isnan(sample_rate):
        problems.append(("--sample-rate", sample_rate,
                         f"expected a rate from {smallest:.2g} (1/65536) to 1, such as 0.01"))
    if png is not None and png.is_dir():
        problems.append(("--png", str(png), "is a directory: give a file name, such as mrc.png"))
    if problems:
        raise ReportError([Report("FLAG_INVALID", f"{flag} {value!r}: {expected}", value=value)
                           for flag, value, expected in problems])


def _draw(path: Path, exact: Any, shards: Any, target: float, recommended: int | None, distinct: int) -> None:
    """Miss ratio (0 to 1, up) over cache size (0 to the distinct blocks, right): exact in blue,
    SHARDS in orange, 1 - target dashed red, the recommended size dashed green."""
    from appliance import plot
    from appliance.core.reports import Report, ReportError
    from appliance.runner.atomic import atomic_write

    largest = max(distinct, recommended or 0, 1)
    sizes = [largest * k / 200 for k in range(201)]
    series = [plot.Series([(s, curve.miss_ratio(s)) for s in sizes], colour)
              for curve, colour in ((exact, plot.BLUE), (shards, plot.ORANGE)) if curve is not None]
    series.append(plot.Series([(0, 1 - target), (largest, 1 - target)], plot.RED, dashed=True))
    if recommended:
        series.append(plot.Series([(recommended, 0), (recommended, 1)], plot.GREEN, dashed=True))
    try:
        atomic_write(path, plot.line_plot(series, x_range=(0, largest)), 0o644)
    except OSError as exc:
        raise ReportError([Report("FLAG_INVALID", f"--png {str(path)!r}: cannot write it: {exc.strerror or exc}",
                                  value=str(path), fix="give a file in a directory you can write to")]) from None


def _ratio(value: float) -> float:
    return round(value, 6)


def render_analysis(document: dict[str, Any]) -> str:
    """The text `appliance cache analyze` prints."""
    trace = document["trace"]
    block = trace["block_size"]
    lines = [f"{trace['path']} ({trace['format']}): {trace['requests']:,} requests, {trace['accesses']:,} accesses "
             f"of {_bytes(block)} blocks" + (f", {trace['distinct_blocks']:,} distinct blocks "
                                             f"({_bytes(trace['distinct_blocks'] * block)})"
                                             if trace["distinct_blocks"] else "")
             + (", reads only" if trace["reads_only"] else "")]
    if trace["skipped_lines"]:
        lines.append(f"  skipped {trace['skipped_lines']:,} bad lines, the first: {trace['first_skipped']}")
    shards = document["shards"]
    rate = f"SHARDS R={shards['sample_rate']:.2g}" if shards else "SHARDS"
    lines.append(f"  {'cache size':>28}  {'exact miss':>10}  {rate + ' miss':>17}")
    for row in document["sizes"]:
        size = f"{row['blocks']:,} blocks ({_bytes(row['bytes'])})"
        lines.append(f"  {size:>28}  {_show(row['exact_miss_ratio']):>10}  {_show(row['shards_miss_ratio']):>17}")
    if document["mean_absolute_difference"] is not None:
        exact_s, shards_s = document["exact"]["seconds"], shards["seconds"]
        speed = f" ({exact_s / shards_s:.0f}x faster)" if shards_s > 0 else ""
        lines.append(f"exact vs SHARDS: mean absolute difference {document['mean_absolute_difference']:.4f} over "
                     f"{document['compared_sizes']} sizes; exact {exact_s:.2f} s, SHARDS {shards_s:.3f} s{speed}")
    advice = document["recommendation"]
    wanted = f"{advice['target_hit_ratio']:.0%}" if advice["target_hit_ratio"] * 100 % 1 == 0 else \
        f"{advice['target_hit_ratio']:.1%}"
    if advice["reachable"]:
        lines.append(f"recommendation: {advice['blocks']:,} blocks ({_bytes(advice['bytes'])}) for a {wanted} hit "
                     f"ratio ({advice['curve']} curve: {advice['hit_ratio']:.1%} at that size)")
    else:
        lines.append(f"recommendation: no cache size reaches a {wanted} hit ratio: the first access of each block "
                     f"always misses; the best is {advice['best_hit_ratio']:.1%} with {advice['best_blocks']:,} "
                     f"blocks ({_bytes(advice['best_bytes'])}) ({advice['curve']} curve)")
    lines += [f"note: {note}" for note in document["notes"]]
    if document["png"]:
        lines.append(f"wrote {document['png']}")
    return "\n".join(lines)


def _show(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.4f}"


def _bytes(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
