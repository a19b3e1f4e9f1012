"""The prediction cache: LRU order, TTL expiry on a fake clock, keys from encoded rows."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.schema import FeatureSchema
from serving.config.flags import CacheConfig
from serving.routing.cache import PredictionCache
from tests.doubles import FakeClock


@pytest.fixture
def clock():
    return FakeClock(0.0)


def test_get_returns_what_put_stored_and_counts(clock):
    cache = PredictionCache(10, 60, clock)
    assert cache.get("a") is None
    cache.put("a", {"label": 1})
    assert cache.get("a") == {"label": 1}
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)


def test_least_recently_used_is_evicted_first(clock):
    cache = PredictionCache(2, 60, clock)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.get("a")  # b is now the least recently used
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)


def test_putting_an_existing_key_refreshes_it(clock):
    cache = PredictionCache(2, 60, clock)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 10)
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b")) == (10, None)


def test_entries_expire_after_the_ttl(clock):
    cache = PredictionCache(10, 60, clock)
    cache.put("a", 1)
    clock.now = 59.9
    assert cache.get("a") == 1
    clock.now = 60
    assert cache.get("a") is None
    assert len(cache) == 0
    cache.put("a", 2)
    clock.now = 100
    assert cache.get("a") == 2  # the TTL counts from the latest put


def test_zero_entries_disables_the_cache(clock):
    cache = PredictionCache(0, 60, clock)
    cache.put("a", 1)
    assert cache.get("a") is None
    assert (len(cache), cache.hits, cache.misses) == (0, 0, 0)


def test_none_is_never_cached(clock):
    cache = PredictionCache(10, 60, clock)
    cache.put("a", None)
    assert len(cache) == 0


def test_resize_evicts_least_recent_and_applies_the_new_ttl(clock):
    cache = PredictionCache(3, 60, clock)
    for key in "abc":
        cache.put(key, key)
    cache.resize(2, 10)
    assert cache.get("a") is None and cache.get("c") == "c"
    clock.now = 10
    assert cache.get("c") is None
    cache.resize(0, 10)
    assert len(cache) == 0


def test_clear_drops_entries_and_keeps_counters(clock):
    cache = PredictionCache(10, 60, clock)
    cache.put("a", 1)
    cache.get("a")
    cache.clear()
    assert (len(cache), cache.hits) == (0, 1)


def test_config_drives_size_and_enabled(clock):
    assert PredictionCache.from_config(CacheConfig(enabled=False), clock).max_entries == 0
    cache = PredictionCache.from_config(CacheConfig(max_entries=5, ttl_s=7), clock)
    assert (cache.max_entries, cache.ttl_s) == (5, 7)
    cache.reconfigure(CacheConfig(enabled=False))
    assert cache.max_entries == 0


@pytest.mark.parametrize(("max_entries", "ttl_s"), [(-1, 10), (10, 0)])
def test_rejects_invalid_limits(max_entries, ttl_s):
    with pytest.raises(ValueError):
        PredictionCache(max_entries, ttl_s)


def _schema() -> FeatureSchema:
    frame = pd.DataFrame(
        {
            "age": [30.0, 41.0, np.nan],
            "income": [1.5, 2.5, 3.5],
            "city": ["Delft", "Gouda", "Delft"],
        }
    )
    return FeatureSchema.infer(frame, ["no", "yes"])


def test_key_is_the_encoded_row_so_order_and_int_float_spelling_do_not_matter():
    codes = _schema().encode_rows(
        [{"age": 30, "income": 1.5, "city": "Delft"}, {"city": "Delft", "income": 1.5, "age": 30.0}]
    )
    assert PredictionCache.make_key("ensemble", "v1", codes[0]) == PredictionCache.make_key(
        "ensemble", "v1", codes[1]
    )


def test_key_depends_on_model_version_and_values():
    codes = _schema().encode_rows(
        [
            {"age": 30, "income": 1.5, "city": "Delft"},
            {"age": 31, "income": 1.5, "city": "Delft"},
            {"age": 30, "income": 1.5, "city": "Gouda"},
            {"age": None, "income": 1.5, "city": "Delft"},
        ]
    )
    keys = {
        PredictionCache.make_key("ensemble", "v1", codes[0]),
        PredictionCache.make_key("ensemble", "v2", codes[0]),
        PredictionCache.make_key("classic", "v1", codes[0]),
    }
    keys |= {PredictionCache.make_key("ensemble", "v1", row) for row in codes[1:]}
    assert len(keys) == 6


@given(st.lists(st.floats(allow_nan=True, allow_infinity=False, width=64), min_size=1, max_size=8))
def test_equal_rows_share_a_key_and_a_cached_value(values):
    cache = PredictionCache(8, 60)
    row = np.asarray(values, dtype=np.float64)
    cache.put(PredictionCache.make_key("m", "1", row), "answer")
    assert cache.get(PredictionCache.make_key("m", "1", row.copy())) == "answer"
    assert cache.get(PredictionCache.make_key("m", "2", row)) is None
