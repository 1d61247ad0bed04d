import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.vitals.sketch import (
    RELATIVE_ACCURACY,
    DenseSum,
    Sketch,
    bucket_of,
    dense_quantiles,
    dense_sums,
    dense_weights,
)

values = st.lists(
    st.one_of(
        st.floats(min_value=0.0, max_value=120_000.0, allow_nan=False),
        st.just(0.0),
        st.floats(min_value=0.0, max_value=2.0, allow_nan=False),
    ),
    min_size=1,
    max_size=400,
)
quantiles = st.sampled_from([0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0])


def exact_quantile(data: list[tuple[float, float]], q: float) -> float:
    """Inverted-CDF quantile of (value, weight) pairs, computed from the raw values."""
    ordered = sorted(data)
    total = sum(w for _, w in ordered)
    target = q * total - 1e-9
    cumulative = 0.0
    for value, weight in ordered:
        cumulative += weight
        if cumulative > 1e-9 and cumulative >= target:
            return value
    return ordered[-1][0]


def within_accuracy(estimate: float, exact: float) -> bool:
    if exact <= 1e-6:
        return estimate == 0.0
    return abs(estimate - exact) <= RELATIVE_ACCURACY * exact + 1e-12


@given(values, quantiles)
def test_quantiles_are_within_one_percent_of_exact(data: list[float], q: float) -> None:
    estimate = Sketch.of(data).quantile(q)
    assert estimate is not None
    assert within_accuracy(estimate, exact_quantile([(v, 1.0) for v in data], q))


@given(
    st.lists(st.tuples(st.floats(min_value=0.0, max_value=60_000.0), st.sampled_from([1.0, 2.0, 4.0, 10.0]))), quantiles
)
def test_weighted_quantiles_are_within_one_percent_of_exact(data: list[tuple[float, float]], q: float) -> None:
    sketch = Sketch()
    for value, weight in data:
        sketch.add(value, weight)
    estimate = sketch.quantile(q)
    if not data:
        assert estimate is None
        return
    assert estimate is not None
    assert within_accuracy(estimate, exact_quantile(data, q))


@settings(max_examples=60)
@given(st.lists(values, min_size=1, max_size=6))
def test_merging_parts_equals_sketching_the_whole(parts: list[list[float]]) -> None:
    merged = Sketch()
    for part in parts:
        merged.merge(Sketch.of(part))
    assert merged == Sketch.of([v for part in parts for v in part])
    assert math.isclose(merged.count, sum(len(p) for p in parts))


@given(values, values)
def test_subtracting_values_undoes_adding_them(kept: list[float], removed: list[float]) -> None:
    sketch = Sketch.of(kept + removed)
    for value in removed:
        sketch.add(value, -1.0)
    assert sketch == Sketch.of(kept)


@given(values)
def test_json_round_trip(data: list[float]) -> None:
    sketch = Sketch.of(data, weight=2.5)
    assert Sketch.from_json(sketch.to_json()) == sketch


def test_empty_and_invalid() -> None:
    assert Sketch().quantile(0.75) is None
    assert Sketch.from_json(None).count == 0
    with pytest.raises(ValueError, match="between 0 and 1"):
        Sketch.of([1.0]).quantile(1.5)
    with pytest.raises(ValueError, match="bins must be an object"):
        Sketch.from_json({"b": [1, 2]})


def test_the_json_form_is_compact() -> None:
    # 10,000 LCP-like values spread over two decades fit in a few hundred buckets.
    sketch = Sketch.of(800 + (i * 37 % 9000) for i in range(10_000))
    assert len(sketch.bins) < 250
    bins = sketch.to_json()["b"]
    assert isinstance(bins, dict)
    assert all(isinstance(w, int) for w in bins.values())


@given(
    parts=st.lists(
        st.lists(
            st.tuples(st.floats(min_value=0, max_value=120_000, allow_nan=False), st.sampled_from([1.0, 2.0, 1 / 0.3])),
            max_size=40,
        ),
        min_size=1,
        max_size=6,
    ),
    q=st.floats(min_value=0, max_value=1),
)
def test_dense_sums_answer_as_merged_sketches(parts: list[list[tuple[float, float]]], q: float) -> None:
    """DenseSum (the dashboards' fast path) adds stored sketches, dense or
    sparse, to the same histogram and quantiles as Sketch.merge."""
    merged, dense = Sketch(), DenseSum()
    for i, part in enumerate(parts):
        sketch = Sketch()
        for value, weight in part:
            sketch.add(value, weight)
        merged.merge(sketch)
        if i % 2:
            dense.add_dense(*sketch.to_dense())
        else:
            dense.add_json(sketch.to_json())
    assert dense.sketch() == merged
    assert dense.quantile(q) == merged.quantile(q)
    assert Sketch.from_dense(*merged.to_dense()) == merged


def test_dense_sums_drop_what_cancels_out() -> None:
    dense = DenseSum()
    dense.add_dense(*Sketch.of([100.0, 200.0]).to_dense())
    dense.add_dense(*Sketch.of([200.0], weight=-1).to_dense())
    assert dense.sketch() == Sketch.of([100.0])
    assert dense.quantile(1) == Sketch.of([100.0]).quantile(1)


@settings(max_examples=60, deadline=None)
@given(
    blocks=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=3),
            st.lists(
                st.tuples(
                    st.floats(min_value=0.0, max_value=120_000.0, allow_nan=False),
                    st.floats(min_value=-3, max_value=3, allow_nan=False),
                ),
                min_size=1,
                max_size=6,
            ),
        ),
        max_size=12,
    )
)
def test_dense_sums_add_blocks_bit_for_bit_as_one_by_one(blocks: list[tuple[int, list[tuple[float, float]]]]) -> None:
    """dense_sums (one bincount over every block of a query) gives each
    group exactly the weights that DenseSum.add_dense gives block by block,
    groups without blocks none."""
    groups = 5
    one_by_one = [DenseSum() for _ in range(groups)]
    group_of_block: list[int] = []
    offsets: list[int] = []
    raw: list[np.ndarray] = []
    for group, part in blocks:
        sketch = Sketch()
        for value, weight in part:
            sketch.add(value, weight)
        zero, offset, weights = sketch.to_dense()
        one_by_one[group].add_dense(zero, offset, weights)
        if weights:
            group_of_block.append(group)
            offsets.append(offset)
            raw.append(dense_weights(weights))
    for expected, summed in zip(one_by_one, dense_sums(groups, group_of_block, offsets, raw), strict=True):
        if expected.weights is None:
            assert summed is None
            continue
        assert summed is not None
        lowest, sums = summed
        # Same buckets, same float64 sums: a wider range only adds zeros at the ends.
        assert lowest <= expected.offset
        start = expected.offset - lowest
        assert sums[start : start + len(expected.weights)].tolist() == expected.weights.tolist()
        assert not sums[:start].any() and not sums[start + len(expected.weights) :].any()


def test_dense_weights_refuse_a_truncated_block() -> None:
    with pytest.raises(ValueError, match="whole float64s"):
        dense_weights(b"\x00" * 12)
    with pytest.raises(ValueError, match="whole float64s"):
        DenseSum().add_dense(0.0, 3, b"\x00" * 12)


def test_the_dense_form_runs_from_the_lowest_bucket_to_the_highest() -> None:
    sketch = Sketch.of([0.0, 100.0, 200.0])
    sketch.add(200.0, -1)
    zero, offset, weights = sketch.to_dense()
    assert (zero, offset, len(weights)) == (1.0, bucket_of(100.0), 8)
    assert Sketch.from_dense(zero, offset, weights) == Sketch.of([0.0, 100.0])
    assert Sketch().to_dense() == (0.0, 0, b"")


@settings(max_examples=80, deadline=None)
@given(
    sums=st.lists(
        st.lists(
            st.tuples(
                st.one_of(
                    st.just(0.0), st.floats(min_value=0.0, max_value=2.0), st.floats(min_value=0, max_value=120_000)
                ),
                st.sampled_from([1.0, 1 / 0.3, -1.0, 1e-12]),
            ),
            max_size=8,
        ),
        max_size=10,
    ),
    q=quantiles,
)
def test_dense_quantiles_answer_bit_for_bit_as_one_by_one(sums: list[list[tuple[float, float]]], q: float) -> None:
    """dense_quantiles answers for many sums at once (laid side by side,
    aligned on their buckets) exactly what it answers for each alone: empty
    sums, zero buckets, weights that cancel out or are dust, sums far apart
    in buckets. (Each alone against Sketch.quantile: the tests above.)"""
    dense_list = []
    for part in sums:
        dense = DenseSum()
        for value, weight in part:
            dense.add_dense(*Sketch.of([value], weight=weight).to_dense())
        dense_list.append(dense)
    assert dense_quantiles(dense_list, q) == [dense_quantiles([dense], q)[0] for dense in dense_list]


def test_dense_quantiles_refuse_a_quantile_outside_0_to_1() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        dense_quantiles([DenseSum()], 1.5)
