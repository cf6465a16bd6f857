"""`appliance cache analyze` as an operator runs it: the table, the advice, the JSON, the PNG, the refusals."""
from __future__ import annotations

import itertools
import json
import random
import struct
import zlib

import pytest
from typer.testing import CliRunner

from appliance.cli import app
from appliance.core.reports import ExitCode
from appliance.plot import PNG_SIGNATURE
from appliance.storage import mrc
from appliance.storage.traces import read_trace

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["cache", "analyze", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def msr_trace(tmp_path_factory):
    """60,000 MSR requests of 4-8 KiB over 3,000 blocks, skewed."""
    rng = random.Random(11)
    weights = list(itertools.accumulate(1 / (rank + 1) ** 0.9 for rank in range(3_000)))
    path = tmp_path_factory.mktemp("traces") / "web.csv"
    with path.open("w") as handle:
        for n, block in enumerate(rng.choices(range(3_000), cum_weights=weights, k=60_000)):
            kind = "Read" if rng.random() < 0.8 else "Write"
            handle.write(f"{128166372003061629 + n},web,0,{kind},{block * 4096},{rng.choice([4096, 8192])},120\n")
    return path


def test_text_shows_both_curves_their_difference_and_the_advice(msr_trace):
    result = invoke(str(msr_trace), "--sample-rate", "0.2")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"{msr_trace} (msr): 60,000 requests" in out
    assert "exact miss" in out and "SHARDS R=0.2 miss" in out
    assert "exact vs SHARDS: mean absolute difference 0.0" in out
    assert "recommendation: " in out and "for a 90% hit ratio (exact curve: 9" in out


def test_json_is_one_document_whose_advice_is_the_exact_curves(msr_trace):
    result = invoke(str(msr_trace), "--json", "--target", "0.8", "--block-size", "8192", "--sample-rate", "0.3")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    curve = mrc.exact_mrc(read_trace(msr_trace, "msr", 8192).blocks)
    advice = document["recommendation"]
    assert advice["curve"] == "exact" and advice["reachable"]
    assert advice["blocks"] == mrc.recommend(curve, 0.8, 8192).blocks and advice["bytes"] == 8192 * advice["blocks"]
    assert document["trace"]["distinct_blocks"] == curve.distinct
    sizes = [row["blocks"] for row in document["sizes"]]
    assert sizes == sorted(sizes) and advice["blocks"] in sizes
    assert all(row["exact_miss_ratio"] == pytest.approx(curve.miss_ratio(row["blocks"]), abs=1e-6)
               for row in document["sizes"])
    assert 0 <= document["mean_absolute_difference"] < 0.05


def test_no_exact_recommends_from_shards(msr_trace):
    document = json.loads(invoke(str(msr_trace), "--json", "--no-exact", "--sample-rate", "0.5").stdout)
    assert document["exact"] is None and document["mean_absolute_difference"] is None
    assert document["recommendation"]["curve"] == "shards"
    assert all(row["exact_miss_ratio"] is None for row in document["sizes"])


def test_png_is_a_valid_image(msr_trace, tmp_path):
    image = tmp_path / "mrc.png"
    result = invoke(str(msr_trace), "--png", str(image))
    assert result.exit_code == 0, result.output
    data = image.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    length, kind = struct.unpack(">I4s", data[8:16])
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (kind, length, depth, colour) == (b"IHDR", 13, 8, 2)
    chunks, offset = {}, 8
    while offset < len(data):
        size, name = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + size]
        assert struct.unpack(">I", data[offset + 8 + size:offset + 12 + size])[0] == zlib.crc32(name + body)
        chunks[name] = chunks.get(name, b"") + body
        offset += 12 + size
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * (1 + 3 * width)
    assert b"IEND" in chunks and f"wrote {image}" in result.stdout


def test_own_log_uses_its_block_size(tmp_path):
    log = tmp_path / "cache.log"
    log.write_text("# appliance-cache-log v1 block_size=65536\n" + "".join(f"{n}.0 r {n % 7}\n" for n in range(100)))
    document = json.loads(invoke(str(log), "--json", "--sample-rate", "1").stdout)
    assert (document["trace"]["format"], document["trace"]["block_size"]) == ("own", 65536)
    assert document["recommendation"]["blocks"] == 7 and document["recommendation"]["bytes"] == 7 * 65536


def test_a_missing_trace_is_a_one_line_error_naming_it(tmp_path):
    result = invoke(str(tmp_path / "absent.csv"))
    assert result.exit_code == ExitCode.INVALID_INPUT
    first = result.stderr.splitlines()[0]
    absent = tmp_path / "absent.csv"
    assert first == f"error: {absent}: cannot read the trace: No such file or directory [VALUE_INVALID]"
    assert "Traceback" not in result.output


def test_a_bad_line_names_line_and_content_and_skip_bad_counts_it(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("0,0,4096\n1,4096,4096\n2,lots,4096\n3,0,4096\n")
    result = invoke(str(trace))
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "line 3: offset 'lots' is not a whole number: '2,lots,4096'" in result.stderr
    assert "--skip-bad" in result.stderr
    skipped = invoke(str(trace), "--skip-bad", "--sample-rate", "1")
    assert skipped.exit_code == 0 and "skipped 1 bad lines, the first: line 3" in skipped.stdout


def test_bad_flags_are_all_named_at_once_with_exit_2(msr_trace):
    result = invoke(str(msr_trace), "--target", "1.5", "--sample-rate", "0", "--format", "xls", "--block-size", "0")
    assert result.exit_code == ExitCode.USAGE
    for expected in ("--format 'xls': expected auto, own, msr or csv", "--target 1.5: expected a hit ratio",
                     "--sample-rate 0.0: expected a rate", "--block-size 0: expected a whole number of bytes"):
        assert expected in result.stderr
    assert "Traceback" not in result.output


def test_errors_in_json_are_a_document_too(tmp_path):
    result = invoke(str(tmp_path / "absent.csv"), "--json")
    assert result.exit_code == ExitCode.INVALID_INPUT
    document = json.loads(result.stdout)
    assert document["ok"] is False and document["reports"][0]["code"] == "VALUE_INVALID"
    assert document["reports"][0]["path"] == str(tmp_path / "absent.csv")
