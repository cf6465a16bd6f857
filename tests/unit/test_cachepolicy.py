"""The SSD cache's policies: budgets kept, counters honest, a restart changes nothing, LRU is LRU."""
from __future__ import annotations

import json
from collections import OrderedDict

import pytest
from hypothesis import given, settings, strategies as st

from appliance.storage.cachepolicy import CacheStateError, LfuAging, Lru, restore

keys = st.lists(st.integers(min_value=0, max_value=40), max_size=300)
# Small windows, caps and sketches so aging, saturation and sketch collisions all happen.
lfu_params = st.fixed_dictionaries({
    "capacity": st.integers(min_value=1, max_value=12),
    "window": st.booleans(),
    "aging_window": st.integers(min_value=1, max_value=60),
    "max_count": st.integers(min_value=1, max_value=15),
    "sketch_width": st.sampled_from([1, 2, 8, 64]),
})


def run(cache, trace):
    return [cache.request(key) for key in trace]


@settings(max_examples=300, deadline=None)
@given(params=lfu_params, trace=keys)
def test_lfu_aging_keeps_its_budget_and_its_counters_add_up(params, trace):
    cache = LfuAging(**params)
    for n, key in enumerate(trace, 1):
        was_in = key in cache
        outcome = cache.request(key)
        assert outcome.hit == was_in
        assert len(cache) <= cache.capacity
        assert len(cache._window) <= cache.window_target <= cache.capacity
        assert cache.hits + cache.misses == n
        if outcome.hit:
            assert not outcome.admitted and outcome.evicted == ()
        else:
            assert (key in cache) == outcome.admitted
            assert all(gone not in cache for gone in outcome.evicted)
            if not params["window"]:
                assert len(outcome.evicted) <= 1 and (outcome.admitted or not outcome.evicted)
    assert cache.evictions <= cache.admissions <= cache.misses
    assert cache.admissions - cache.evictions == len(cache)


@settings(max_examples=200, deadline=None)
@given(params=lfu_params, before=keys, after=keys)
def test_lfu_aging_restored_from_its_state_behaves_identically(params, before, after):
    cache = LfuAging(**params)
    run(cache, before)
    saved = json.loads(json.dumps(cache.state()))  # the server writes it as JSON
    restored = restore(saved)
    assert run(restored, after) == run(cache, after)
    assert restored.state() == cache.state()


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(min_value=1, max_value=10), trace=keys)
def test_lru_matches_an_ordered_dict_model(capacity, trace):
    cache, model = Lru(capacity), OrderedDict()
    for key in trace:
        expected_hit = key in model
        model[key] = None
        model.move_to_end(key)
        expected_evicted = (model.popitem(last=False)[0],) if len(model) > capacity else ()
        outcome = cache.request(key)
        assert (outcome.hit, outcome.evicted) == (expected_hit, expected_evicted)
        assert list(cache.state()["blocks"]) == list(model)
    assert cache.hits + cache.misses == len(trace)


@settings(max_examples=100, deadline=None)
@given(capacity=st.integers(min_value=1, max_value=10), before=keys, after=keys)
def test_lru_restored_from_its_state_behaves_identically(capacity, before, after):
    cache = Lru(capacity)
    run(cache, before)
    restored = restore(json.loads(json.dumps(cache.state())))
    assert run(restored, after) == run(cache, after)
    assert restored.state() == cache.state()


@pytest.mark.parametrize("window", [True, False])
def test_a_scan_does_not_push_out_the_blocks_read_again_and_again(window):
    cache = LfuAging(100, window=window)
    hot = list(range(50))
    for _ in range(20):
        for key in hot:
            cache.access(key)
    for key in range(10_000, 13_000):  # a backup reads 30 times the cache once (about 2 aging windows)
        cache.access(key)
    assert sum(cache.access(key) for key in hot) == 50


def test_with_the_window_a_moved_working_set_is_cached_within_a_few_passes():
    cache = LfuAging(200)
    for phase in range(3):
        working_set = range(phase * 1000, phase * 1000 + 150)
        for _ in range(20):
            hits = sum(cache.access(key) for key in working_set)
    assert hits == 150


def test_a_sliding_working_set_is_cached_about_as_well_as_lru():
    """A working set twice the cache that keeps moving (bench/cache.py's recency-slide, scaled down):
    blocks that left it kept their counts and held the cache, 17 points below LRU; evicted as
    stale once their last use is old enough, the loss is a few points."""
    import random

    rng = random.Random(6)
    trace = [start + rng.randrange(400) for start in range(0, 20 * 400, 20) for _ in range(200)]
    lru, lfu = Lru(200), LfuAging(200)
    for key in trace:
        lru.access(key)
        lfu.access(key)
    assert lfu.hits >= lru.hits - 0.03 * len(trace), (lfu.hits / len(trace), lru.hits / len(trace))


def test_a_state_saved_before_last_use_was_kept_still_restores():
    cache = LfuAging(50)
    run(cache, [i % 70 for i in range(500)])
    state = cache.state()
    for field in ("now", "stale_after", "stale", "reused", "last_use"):
        del state[field]
    state["version"] = 1
    restored = restore(json.loads(json.dumps(state)))
    assert sorted(restored.state()["last_use"]) == sorted([key, 500] for key, _ in cache.state()["main"])
    assert restored.hits == cache.hits and len(restored) == len(cache)
    run(restored, range(100))  # and goes on


def test_without_the_window_only_a_block_that_beats_the_victim_is_stored():
    cache = LfuAging(2, window=False)
    for key in (1, 1, 2, 2):
        cache.access(key)
    outcome = cache.request(3)
    assert outcome == (False, False, ())  # seen once: refused, nothing written to the SSD
    cache.access(3)
    assert cache.request(3) == (False, True, (1,))  # seen three times: beats block 1 (count 2)


def test_aging_halves_the_counts():
    cache = LfuAging(4, window=False, aging_window=10)
    for key in [7] * 9:
        cache.access(key)
    assert cache.state()["main"] == [[7, 9]]
    cache.access(7)  # the tenth access: counted, then everything halved
    assert cache.state()["main"] == [[7, 5]]


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(policy="arc"), "'policy' 'arc': expected one of lfu-aging, lru"),
    (lambda s: s.update(version=99), "'version' 99"),
    (lambda s: s.update(capacity=0), "capacity 0: expected a whole number, at least 1"),
    (lambda s: s.update(sketch="not base64!"), "'sketch' is not zlib data"),
    (lambda s: s["main"].append([1, 99]), "main[1] [1, 99]: expected [block, count]"),
    (lambda s: s["main"].append(["x", 1]), "main[1]: block 'x' is not a block number"),
    (lambda s: s.update(window_blocks=[5, 5]), "'window_blocks' lists a block twice"),
    (lambda s: s.update(hits=-1), "'hits' -1: expected a whole number, at least 0"),
    (lambda s: s.update(last_use=[]), "'last_use' does not list exactly the blocks of 'main'"),
    (lambda s: s.update(last_use=[[3, 99]]), "last_use[0] [3, 99]: expected [block, access number]"),
    (lambda s: s.update(stale_after=0.5), "'stale_after' 0.5: expected a number from 4 to 128"),
    (lambda s: s.update(reused=[3]), "'reused' lists a block that is not in 'window_blocks'"),
])
def test_a_damaged_state_is_refused_naming_the_field(change, message):
    cache = LfuAging(4, window=False)
    cache.access(3)
    state = cache.state()
    change(state)
    with pytest.raises(CacheStateError) as error:
        restore(state)
    assert message in str(error.value)


def test_bad_parameters_are_refused_naming_them():
    with pytest.raises(CacheStateError, match="capacity -1"):
        Lru(-1)
    with pytest.raises(CacheStateError, match="sketch_width 3: expected a power of two"):
        LfuAging(4, sketch_width=3)
