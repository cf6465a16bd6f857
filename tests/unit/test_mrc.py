"""Miss-ratio curves and trace readers: exact is exact, SHARDS is close, the advice only grows with the target."""
from __future__ import annotations

import gzip
import itertools
import random
from array import array

import pytest
from hypothesis import given, settings, strategies as st

from appliance.storage import mrc
from appliance.storage.cachepolicy import Lru
from appliance.storage.traces import VOLUME_SHIFT, TraceError, parse_trace, read_trace
from tests.conftest import require_module

small_traces = st.lists(st.integers(min_value=0, max_value=25), max_size=250)


def brute_force_distances(trace):
    """The textbook O(N x M) LRU stack: a block's distance is its depth in the stack."""
    stack, histogram, first = [], {}, 0
    for key in trace:
        if key in stack:
            depth = len(stack) - stack.index(key)
            histogram[depth] = histogram.get(depth, 0) + 1
            stack.remove(key)
        else:
            first += 1
        stack.append(key)
    return histogram, first


def zipf_trace(blocks, accesses, alpha, seed):
    rng = random.Random(seed)
    weights = list(itertools.accumulate(1 / (rank + 1) ** alpha for rank in range(blocks)))
    return array("q", rng.choices(range(blocks), cum_weights=weights, k=accesses))


def lru_hit_ratio(trace, size):
    cache = Lru(size)
    for key in trace:
        cache.access(key)
    return cache.hits / len(trace)


@settings(max_examples=300, deadline=None)
@given(trace=small_traces)
def test_exact_stack_distances_match_the_brute_force_stack(trace):
    histogram, first, accesses = mrc.stack_distances(trace)
    assert ({d: n for d, n in enumerate(histogram) if n}, first) == brute_force_distances(trace)
    assert accesses == len(trace)


@settings(max_examples=100, deadline=None)
@given(trace=small_traces.filter(bool), size=st.integers(min_value=1, max_value=30))
def test_the_exact_curve_is_what_an_lru_cache_hits(trace, size):
    assert mrc.exact_mrc(trace).hit_ratio(size) == pytest.approx(lru_hit_ratio(trace, size), abs=1e-12)


def test_exact_stays_exact_when_the_time_slots_are_renumbered():
    rng = random.Random(7)
    trace = [rng.randrange(400) for _ in range(150_000)]  # more accesses than the first 65,536 slots
    curve = mrc.exact_mrc(trace)
    for size in (1, 37, 200, 399):
        assert curve.hit_ratio(size) == pytest.approx(lru_hit_ratio(trace, size), abs=1e-12)
    assert curve.distinct == 400 and curve.accesses == len(trace)


def test_shards_is_within_a_hundredth_of_exact_on_a_zipf_trace():
    trace = zipf_trace(20_000, 200_000, 0.9, seed=1)
    exact = mrc.exact_mrc(trace)
    sampled = mrc.shards_mrc(trace, 0.1)
    assert mrc.mean_absolute_error(exact, sampled, mrc.even_sizes(exact.distinct)) <= 0.01
    assert sampled.sampled < 0.2 * len(trace)
    assert abs(sampled.distinct - exact.distinct) <= 0.1 * exact.distinct


def test_shards_follows_every_access_of_a_sampled_block_and_none_of_the_others():
    trace = array("q", [b for _ in range(3) for b in range(5_000)])
    sampled, rate = mrc.shards_sample(trace, 0.05)
    kept = set(sampled)
    assert list(sampled) == [b for b in trace if b in kept]
    assert rate == round(0.05 * 65536) / 65536
    assert 0.04 < len(kept) / 5_000 < 0.06


@pytest.mark.parametrize("keys", [range(200_000), range(0, 4096 * 200_000, 4096),
                                  range(1 << 40, (1 << 40) + 200_000 * 977, 977)])
def test_shards_samples_about_the_rate_of_structured_block_numbers(keys):
    sampled, rate = mrc.shards_sample(array("q", keys), 0.01)
    assert abs(len(sampled) / len(keys) - rate) < 0.1 * rate


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.integers(min_value=0, max_value=(1 << 63) - 1), min_size=1, max_size=50))
def test_the_bulk_hash_equals_the_hash_of_each_block(keys):
    bulk = mrc._hash_bytes(array("q", keys), mrc._TABLES_HIGH)
    assert list(bulk) == [mrc._hash_byte(k, mrc._TABLES_HIGH) for k in keys]


def test_shards_at_rate_one_is_exact():
    trace = zipf_trace(500, 5_000, 1.0, seed=2)
    exact, full = mrc.exact_mrc(trace), mrc.shards_mrc(trace, 1.0)
    assert [full.hit_ratio(s) for s in range(1, 501)] == [exact.hit_ratio(s) for s in range(1, 501)]


def test_shards_says_so_when_it_sampled_nothing():
    with pytest.raises(mrc.NoSampleError):
        mrc.shards_mrc(array("q", [1, 2, 3]), 1 / 65536)


@pytest.mark.parametrize("rate", [0, -0.5, 1.5, 1e-6])
def test_a_sample_rate_out_of_range_is_refused(rate):
    with pytest.raises(ValueError, match="sample rate"):
        mrc.shards_sample(array("q", [1]), rate)


@settings(max_examples=100, deadline=None)
@given(trace=small_traces.filter(bool), targets=st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=2))
def test_a_higher_target_never_gets_a_smaller_cache(trace, targets):
    curve = mrc.exact_mrc(trace)
    advice = [mrc.recommend(curve, t, 4096) for t in sorted(targets)]
    sizes = [a.blocks if a.blocks is not None else float("inf") for a in advice]
    assert sizes == sorted(sizes)
    for a in advice:
        if a.blocks is not None:
            assert curve.hit_ratio(a.blocks) >= a.target - 1e-9 and a.bytes == 4096 * a.blocks
            assert a.blocks == 1 or curve.hit_ratio(a.blocks - 1) < a.target - 1e-12
        else:
            assert a.hit_ratio == curve.best_hit_ratio < a.target


def test_a_target_beyond_the_first_accesses_is_unreachable():
    curve = mrc.exact_mrc([1, 2, 3, 1, 2, 3])  # half the accesses are first accesses
    advice = mrc.recommend(curve, 0.9, 4096)
    assert (advice.blocks, advice.hit_ratio, advice.best_blocks) == (None, 0.5, 3)
    assert mrc.recommend(curve, 0.5, 4096).blocks == 3


def test_exact_mrc_matches_libcachesim_lru():
    lcs = require_module("libcachesim")
    trace = zipf_trace(5_000, 60_000, 0.8, seed=3)
    curve = mrc.exact_mrc(trace)
    for size in (10, 100, 1_000, 4_000):
        cache = lcs.LRU(cache_size=size)
        hits = sum(cache.get(lcs.Request(obj_size=1, obj_id=int(block))) for block in trace)
        assert curve.miss_ratio(size) == pytest.approx(1 - hits / len(trace), abs=1e-12), size


# -- trace readers ----------------------------------------------------------------------------------------------
def test_own_log_with_its_header_keeps_its_block_numbers_and_size():
    trace = parse_trace(["# appliance-cache-log v1 block_size=65536", "1733580000.25 r 7", "1733580000.5 w 9",
                         "# a comment", "", "1733580001 r 7"])
    assert (list(trace.blocks), trace.format, trace.block_size, trace.requests) == ([7, 9, 7], "own", 65536, 3)


def test_own_log_refuses_a_different_block_size():
    with pytest.raises(TraceError, match="counts blocks of 65536 bytes, not 4096") as error:
        parse_trace(["# appliance-cache-log v1 block_size=65536", "1 r 7"], block_size=4096)
    assert "--block-size 65536" in error.value.fix


def test_msr_requests_are_split_into_blocks_and_volumes_kept_apart():
    lines = ["128166372003061629,hm,0,Read,8192,8192,2013",   # blocks 2, 3
             "128166372003061630,hm,0,Write,4095,2,100",      # straddles 0 and 1
             "128166372003061631,hm,1,Read,0,4096,100",       # another disk: another volume
             "128166372003061632,hm,0,Read,0,0,100"]          # 0 bytes: no block
    trace = parse_trace(lines)
    assert trace.format == "msr" and trace.requests == 4
    assert list(trace.blocks) == [2, 3, 0, 1, 1 << VOLUME_SHIFT]
    assert list(parse_trace(lines, reads_only=True).blocks) == [2, 3, 1 << VOLUME_SHIFT]


def test_simple_csv_with_a_header_and_the_block_size():
    trace = parse_trace(["time,offset,size,op", "0.1,0,16384,read", "0.2,16384,1,W", "0.3,40000,100"],
                        block_size=8192)
    assert (list(trace.blocks), trace.format, trace.requests) == ([0, 1, 2, 4], "csv", 3)


def test_a_bad_line_names_its_number_and_content():
    with pytest.raises(TraceError) as error:
        parse_trace(["0.1,0,4096,r", "0.2,oops,4096,r"])
    assert str(error.value) == "<trace>: line 2: offset 'oops' is not a whole number: '0.2,oops,4096,r'"
    assert (error.value.line, error.value.content) == (2, "0.2,oops,4096,r")
    assert "--skip-bad" in error.value.fix and "time,offset,size[,op]" in error.value.fix


@pytest.mark.parametrize("fmt, line, reason", [
    ("msr", "1,hm,0,Erase,0,4096,1", "Type 'Erase' is not Read or Write"),
    ("msr", "1,hm,0,Read,-4096,4096,1", "Offset -4096 is negative"),
    ("msr", "1,hm,0,Read,0,4096", "expected 7 comma-separated fields, got 6"),
    ("own", "1 x 5", "OP 'x' is not r or w"),
    ("own", "soon r 5", "TIME 'soon' is not a number"),
    ("csv", "1,2", "expected 3 or 4 comma-separated fields"),
])
def test_each_format_says_what_is_wrong_with_a_line(fmt, line, reason):
    with pytest.raises(TraceError, match=reason):
        parse_trace([line], fmt)


def test_skip_bad_counts_the_bad_lines_and_keeps_the_first():
    trace = parse_trace(["0.1,0,4096,r", "garbage", "0.2,4096,4096,x", "0.3,8192,4096,w"], "csv", skip_bad=True)
    assert (list(trace.blocks), trace.skipped) == ([0, 2], 2)
    assert trace.first_skipped == "line 2: expected 3 or 4 comma-separated fields (time,offset,size[,op]), got 1: " \
                                  "'garbage'"


def test_an_unknown_format_is_refused_naming_the_line():
    with pytest.raises(TraceError, match="line 2: cannot tell the trace format from 'hello world'"):
        parse_trace(["", "hello world"])


def test_a_gzipped_trace_is_read_and_a_missing_one_is_a_clear_error(tmp_path):
    path = tmp_path / "trace.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("0,0,4096\n1,4096,4096\n")
    assert list(read_trace(path).blocks) == [0, 1]
    with pytest.raises(TraceError, match="cannot read the trace: No such file or directory"):
        read_trace(tmp_path / "absent.csv")
    (tmp_path / "broken.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(TraceError, match="cannot read the trace"):
        read_trace(tmp_path / "broken.csv.gz")
