"""Monitoring history: reading a host's or a VM's samples, and keeping disk use bounded.

Samples arrive raw (span 0). `compact` folds raw samples older than `raw_seconds` into 5-minute
rows, 5-minute rows older than `medium_seconds` into hourly rows, and deletes hourly rows older
than `keep_seconds`: a VM reporting every 30 s costs at most 120 + 288 + 720 rows whatever its age.
A folded row holds the bucket's average CPU and memory and its last (highest) network counters;
`span` says how many seconds it covers. Each step works one bucket at a time (bounded transactions,
a crash in between leaves raw rows that the next pass folds: the fold of a bucket and the delete of
its sources are one transaction, so nothing is counted twice).
"""
from __future__ import annotations

from dataclasses import dataclass

TABLES = {
    "vm": ("mon_vm", "vm_id", ("cpu", "mem_kb", "net_rx", "net_tx"), "host_id"),
    "host": ("mon_host", "host_id", ("cpu", "mem_mb", "domains"), None),
}


@dataclass(frozen=True)
class Retention:
    raw_seconds: int = 3600
    medium_seconds: int = 86400
    keep_seconds: int = 30 * 86400
    medium_bucket: int = 300
    coarse_bucket: int = 3600


def samples(tx, kind: str, ident: int, since: int, limit: int = 1000) -> list[dict]:
    table, key, columns, _ = TABLES[kind]
    rows = tx.execute(f"SELECT at, span, {', '.join(columns)} FROM {table} WHERE {key} = ? AND at >= ? "
                      f"ORDER BY at LIMIT {int(limit)}", (ident, since)).all()
    return [{"at": int(r[0]), "span": int(r[1]), **{c: int(v) for c, v in zip(columns, r[2:])}} for r in rows]


def _fold(db, kind: str, source_span: int, bucket: int, cutoff: int) -> int:
    """Fold rows of `source_span` older than `cutoff` into `bucket`-second rows, one bucket a
    transaction. Returns the rows folded."""
    table, key, columns, extra = TABLES[kind]
    folded = 0
    while True:
        with db.transaction() as tx:
            row = tx.execute(f"SELECT MIN(at) FROM {table} WHERE span = ? AND at < ?", (source_span, cutoff)).one()
            if not row or row[0] is None:
                return folded
            start = int(row[0]) - int(row[0]) % bucket
            end = min(start + bucket, cutoff)
            averages = ", ".join(f"MAX({c})" if c.startswith("net_") else f"ROUND(AVG({c}))" for c in columns)
            extras = f", MAX({extra})" if extra else ""
            tx.execute(f"INSERT INTO {table} ({key}{', ' + extra if extra else ''}, at, {', '.join(columns)}, span) "
                       f"SELECT {key}{extras}, ?, {averages}, ? FROM {table} "
                       f"WHERE span = ? AND at >= ? AND at < ? GROUP BY {key}",
                       (start, bucket, source_span, start, end))
            tx.execute(f"DELETE FROM {table} WHERE span = ? AND at >= ? AND at < ?", (source_span, start, end))
            folded += tx.rowcount
        if end == cutoff:
            return folded


def compact(db, now: float, retention: Retention = Retention()) -> dict[str, int]:
    """One pass of retention over both tables; returns rows folded or deleted per step."""
    done = {}
    for kind in TABLES:
        table = TABLES[kind][0]
        raw_cut = int(now) - retention.raw_seconds
        raw_cut -= raw_cut % retention.medium_bucket  # whole buckets only: a later pass never splits one
        done[f"{kind}_raw_folded"] = _fold(db, kind, 0, retention.medium_bucket, raw_cut)
        medium_cut = int(now) - retention.medium_seconds
        medium_cut -= medium_cut % retention.coarse_bucket
        done[f"{kind}_medium_folded"] = _fold(db, kind, retention.medium_bucket, retention.coarse_bucket, medium_cut)
        with db.transaction() as tx:
            tx.execute(f"DELETE FROM {table} WHERE at < ?", (int(now) - retention.keep_seconds,))
            done[f"{kind}_expired"] = tx.rowcount
    return done
