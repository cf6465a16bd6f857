"""Block traces for the cache analysis: read an access log into the block numbers it touches.

Three formats (docs/cache.md shows each):
- own: the SSD cache's own access log. An optional first line `# appliance-cache-log v1
  block_size=4096`, then one line per block access: `TIME OP BLOCK`, whitespace-separated, where
  TIME is seconds since the epoch (UTC, decimals allowed), OP is r or w, BLOCK the block number
  in units of the header's block size.
- msr: MSR Cambridge (SNIA IOTTA) CSV, no header: `Timestamp,Hostname,DiskNumber,Type,Offset,Size,
  ResponseTime`, Type Read or Write, Offset and Size in bytes. Each volume (host, disk) gets its
  own block numbers: volume index (in order of first appearance) x 2^48 + block.
- csv: `time,offset,size[,op]` with offset and size in bytes, op r/w/read/write (default r); an
  optional header line naming the columns.
In every format, blank lines and lines starting with # are skipped.
A request of `size` bytes at `offset` touches the blocks offset // block_size to
(offset + size - 1) // block_size, one access each. Files ending in .gz are read through gzip.
"""
from __future__ import annotations

import gzip
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

FORMATS = ("own", "msr", "csv")
OWN_HEADER = "# appliance-cache-log v1"
VOLUME_SHIFT = 48  # msr: a volume's blocks start at index x 2^48
EXPECTED = {
    "own": "TIME OP BLOCK, such as '1733580000.25 r 81920' (OP r or w)",
    "msr": "Timestamp,Hostname,DiskNumber,Type,Offset,Size,ResponseTime, such as "
           "'128166372003061629,hm,0,Read,3600998400,4096,2013'",
    "csv": "time,offset,size[,op], such as '0.25,3600998400,4096,r'",
}
_OPS = {"r": "r", "read": "r", "w": "w", "write": "w"}


class TraceError(ValueError):
    """A trace that cannot be read: the message names the file, the line and its content; `fix` says what to do."""

    def __init__(self, source: str, detail: str, fix: str, *, line: int | None = None,
                 content: str | None = None) -> None:
        super().__init__(f"{source}: {detail}")
        self.source, self.detail, self.fix = source, detail, fix
        self.line, self.content = line, content


class _BadLine(ValueError):
    pass


@dataclass(frozen=True, eq=False)
class Trace:
    blocks: array  # array('q'): the block of every access, in order
    format: str
    block_size: int
    requests: int  # records read (an msr or csv request may touch several blocks)
    skipped: int  # bad lines skipped (skip_bad)
    first_skipped: str | None  # "line N: reason: content" of the first one


def read_trace(path: Path, fmt: str = "auto", block_size: int | None = None, *, skip_bad: bool = False,
               reads_only: bool = False) -> Trace:
    """Read a trace file. `block_size` defaults to 4096, or for an own log with a header to the log's."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as handle:
            return parse_trace(handle, fmt, block_size, skip_bad=skip_bad, reads_only=reads_only, source=str(path))
    except (OSError, EOFError, zlib.error) as exc:  # EOFError, zlib.error: a damaged .gz
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise TraceError(str(path), f"cannot read the trace: {reason}",
                         "check the path and that the file is readable") from None


def parse_trace(lines: Iterable[str], fmt: str = "auto", block_size: int | None = None, *, skip_bad: bool = False,
                reads_only: bool = False, source: str = "<trace>") -> Trace:
    """Turn the lines of a trace into the block numbers it touches, in order.

    A line that does not parse raises TraceError naming it, or with `skip_bad` is counted and skipped."""
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected auto or one of {', '.join(FORMATS)}")
    numbered = _data_lines(lines)
    first = next(numbered, None)
    header_size = None
    if first is not None and first[1].startswith(OWN_HEADER):
        header_size = _own_header_block_size(first, source)
        if fmt == "auto":
            fmt = "own"
        first = None
    records = ((number, line) for number, line in _chain(first, numbered) if not line.startswith("#"))
    first = next(records, None)
    if fmt == "auto":
        fmt = "own" if first is None else _detect(first, source)
    if fmt == "own" and header_size is not None:
        if block_size is not None and block_size != header_size:
            raise TraceError(source, f"the log counts blocks of {header_size} bytes, not {block_size}",
                             f"leave out --block-size, or give --block-size {header_size}")
        block_size = header_size
    block_size = block_size or 4096
    parse = _PARSERS[fmt]()
    blocks = array("q")
    append, extend = blocks.append, blocks.extend
    requests = skipped = 0
    first_skipped = None
    for number, line in _chain(first, records):
        try:
            parsed = parse(line)
        except _BadLine as problem:
            if fmt == "csv" and requests == 0 and skipped == 0 and _is_csv_header(line):
                continue
            if not skip_bad:
                raise TraceError(source, f"line {number}: {problem}: {_shown(line)}",
                                 f"--format {fmt} expects {EXPECTED[fmt]}; fix or delete the line, or pass "
                                 "--skip-bad to skip and count such lines", line=number, content=line) from None
            skipped += 1
            if first_skipped is None:
                first_skipped = f"line {number}: {problem}: {_shown(line)}"
            continue
        requests += 1
        if parsed is None:  # a request of 0 bytes touches no block
            continue
        base, offset, size, op = parsed
        if reads_only and op == "w":
            continue
        if fmt == "own":
            append(offset)  # already a block number
            continue
        start, end = offset // block_size, (offset + size - 1) // block_size
        if end >= 1 << VOLUME_SHIFT:
            raise TraceError(source, f"line {number}: offset {offset} is beyond 2^48 blocks of {block_size} "
                             f"bytes: {_shown(line)}", "check the Offset column, or give a larger --block-size",
                             line=number, content=line)
        if start == end:
            append(base + start)
        else:
            extend(range(base + start, base + end + 1))
    return Trace(blocks, fmt, block_size, requests, skipped, first_skipped)


def _data_lines(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if line:
            yield number, line


def _chain(first: tuple[int, str] | None, rest: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    if first is not None:
        yield first
    yield from rest


def _own_header_block_size(first: tuple[int, str], source: str) -> int:
    number, line = first
    for word in line[len(OWN_HEADER):].split():
        name, _, value = word.partition("=")
        if name == "block_size":
            if value.isdigit() and int(value) > 0:
                return int(value)
            raise TraceError(source, f"line {number}: block_size {value!r} is not a whole number of bytes: "
                             f"{_shown(line)}", "fix the header, such as '# appliance-cache-log v1 block_size=4096'",
                             line=number, content=line)
    return 4096


def _detect(first: tuple[int, str], source: str) -> str:
    number, line = first
    words = line.split()
    if len(words) == 3 and words[1].lower() in ("r", "w"):
        return "own"
    fields = line.split(",")
    if len(fields) == 7:
        return "msr"
    if len(fields) in (3, 4):
        return "csv"
    raise TraceError(source, f"line {number}: cannot tell the trace format from {_shown(line)}",
                     "give --format own, msr or csv (docs/cache.md describes each)", line=number, content=line)


def _is_csv_header(line: str) -> bool:
    return [f.strip().lower() for f in line.split(",")][:3] == ["time", "offset", "size"]


def _own_parser() -> Callable[[str], tuple | None]:
    def parse(line: str) -> tuple:
        words = line.split()
        if len(words) != 3:
            raise _BadLine(f"expected 3 fields (TIME OP BLOCK), got {len(words)}")
        _number(words[0], "TIME", float)
        op = _OPS.get(words[1].lower())
        if op is None or len(words[1]) != 1:
            raise _BadLine(f"OP {words[1]!r} is not r or w")
        return 0, _count(words[2], "BLOCK"), 1, op

    return parse


def _msr_parser() -> Callable[[str], tuple | None]:
    volumes: dict[tuple[str, str], int] = {}

    def parse(line: str) -> tuple | None:
        fields = line.split(",")
        if len(fields) != 7:
            raise _BadLine(f"expected 7 comma-separated fields, got {len(fields)}")
        op = _OPS.get(fields[3].strip().lower())
        if op is None:
            raise _BadLine(f"Type {fields[3]!r} is not Read or Write")
        offset, size = _count(fields[4], "Offset"), _count(fields[5], "Size")
        _count(fields[0], "Timestamp")
        if size == 0:
            return None
        volume = volumes.setdefault((fields[1], fields[2]), len(volumes))
        return volume << VOLUME_SHIFT, offset, size, op

    return parse


def _csv_parser() -> Callable[[str], tuple | None]:
    def parse(line: str) -> tuple | None:
        fields = line.split(",")
        if len(fields) not in (3, 4):
            raise _BadLine(f"expected 3 or 4 comma-separated fields (time,offset,size[,op]), got {len(fields)}")
        _number(fields[0], "time", float)
        op = "r"
        if len(fields) == 4:
            op = _OPS.get(fields[3].strip().lower())
            if op is None:
                raise _BadLine(f"op {fields[3]!r} is not r, w, read or write")
        offset, size = _count(fields[1], "offset"), _count(fields[2], "size")
        return (0, offset, size, op) if size else None

    return parse


_PARSERS = {"own": _own_parser, "msr": _msr_parser, "csv": _csv_parser}


def _count(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _BadLine(f"{name} {text.strip()!r} is not a whole number") from None
    if value < 0:
        raise _BadLine(f"{name} {value} is negative")
    return value


def _number(text: str, name: str, kind: type) -> None:
    try:
        kind(text)
    except ValueError:
        raise _BadLine(f"{name} {text.strip()!r} is not a number") from None


def _shown(line: str) -> str:
    return repr(line if len(line) <= 120 else line[:117] + "...")
