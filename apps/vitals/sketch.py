"""A mergeable, log-bucketed histogram with a relative-accuracy guarantee.

This is the DDSketch idea (Masson, Rim, Lee, VLDB 2019): a positive value x
falls in bucket i = ceil(log_gamma(x)) with gamma = (1 + a) / (1 - a); every
value in bucket i lies in (gamma^(i-1), gamma^i], and answering with
2 * gamma^i / (gamma + 1) is within relative error a of any of them. Buckets
are plain counters, so sketches merge by adding counts: a rollup over any
range and filter is the sum of its parts.

Written here rather than taken from the `ddsketch` package because PerfHub
needs three things that package does not give: weighted counts that can also
be subtracted (a re-reported metric replaces its earlier value), a compact
JSON form stored in rollup rows, and no protobuf dependency.
"""

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)
# Values at or below this go to the zero bucket and are answered as 0. CLS is
# often exactly 0; timings are whole or fractional milliseconds, and a
# millionth is far below anything a browser can measure.
MIN_INDEXABLE = 1e-6
# Weights that cancel out after a subtraction are floating-point dust.
_EPSILON = 1e-9


def bucket_of(value: float) -> int | None:
    """The bucket index of ``value``; None for the zero bucket."""
    if value <= MIN_INDEXABLE:
        return None
    return math.ceil(math.log(value) / _LOG_GAMMA)


# bucket_indexes' index for the zero bucket: below any real bucket index.
ZERO_BUCKET = -(2**40)


def bucket_indexes(values: Iterable[float]) -> np.ndarray:
    """``bucket_of`` for many values at once, ZERO_BUCKET for the zero
    bucket. The same math.log as bucket_of (not numpy's log, which may
    differ by an ulp), so a value lands in the same bucket either way."""
    log, ceil, low, log_gamma = math.log, math.ceil, MIN_INDEXABLE, _LOG_GAMMA
    return np.fromiter((ceil(log(v) / log_gamma) if v > low else ZERO_BUCKET for v in values), dtype=np.int64)


def bucket_value(index: int) -> float:
    """The value that represents bucket ``index`` within the accuracy."""
    return 2 * GAMMA**index / (GAMMA + 1)


class Sketch:
    __slots__ = ("bins", "zero")

    def __init__(self, bins: Mapping[int, float] | None = None, zero: float = 0.0) -> None:
        self.bins: dict[int, float] = dict(bins or {})
        self.zero = zero

    def add(self, value: float, weight: float = 1.0) -> None:
        """Add ``value`` with ``weight`` (negative to take it out again)."""
        index = bucket_of(value)
        if index is None:
            self.zero += weight
            if abs(self.zero) < _EPSILON:
                self.zero = 0.0
            return
        total = self.bins.get(index, 0.0) + weight
        if abs(total) < _EPSILON:
            self.bins.pop(index, None)
        else:
            self.bins[index] = total

    def merge(self, other: "Sketch") -> None:
        for index, weight in other.bins.items():
            total = self.bins.get(index, 0.0) + weight
            if abs(total) < _EPSILON:
                self.bins.pop(index, None)
            else:
                self.bins[index] = total
        self.zero += other.zero
        if abs(self.zero) < _EPSILON:
            self.zero = 0.0

    @property
    def count(self) -> float:
        return self.zero + sum(self.bins.values())

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` (0 to 1), None when empty.

        The rank convention is the inverted CDF: the smallest value whose
        cumulative weight reaches q * (total weight); q = 0 gives the
        minimum and q = 1 the maximum. Weighted (sampled) data uses the same
        rule, so a value seen at sample rate 0.5 counts twice.
        """
        if not 0 <= q <= 1:
            raise ValueError(f"quantile must be between 0 and 1, not {q}")
        total = self.count
        if total <= _EPSILON:
            return None
        # A hair below the target absorbs float error in the running sum.
        target = q * total - _EPSILON
        cumulative = self.zero
        if cumulative > _EPSILON and cumulative >= target:
            return 0.0
        for index in sorted(self.bins):
            cumulative += self.bins[index]
            if cumulative > _EPSILON and cumulative >= target:
                return bucket_value(index)
        return bucket_value(max(self.bins)) if self.bins else 0.0

    def to_json(self) -> dict[str, object]:
        """A compact JSON form: {"z": zero weight, "b": {index: weight}}."""
        return {"z": _compact(self.zero), "b": {str(i): _compact(w) for i, w in sorted(self.bins.items())}}

    def to_dense(self) -> tuple[float, int, bytes]:
        """The dense form (``dense_columns``): larger than the sparse one by
        the empty buckets, but a reader adds thousands of them in C
        (``DenseSum``, ``dense_sums``) instead of a Python loop per bucket;
        the form of the rows the dashboards merge by the thousand
        (DimensionRollup)."""
        if not self.bins:
            return dense_columns(self.zero, 0, np.zeros(0))
        lowest, highest = min(self.bins), max(self.bins)
        weights = np.zeros(highest - lowest + 1, dtype="<f8")
        for index, weight in self.bins.items():
            weights[index - lowest] = weight
        return dense_columns(self.zero, lowest, weights)

    @classmethod
    def from_dense(cls, zero: float, offset: int, weights: bytes | memoryview) -> "Sketch":
        """From the dense form (``to_dense``)."""
        dense = DenseSum()
        dense.add_dense(zero, offset, weights)
        return dense.sketch()

    @classmethod
    def from_json(cls, data: Mapping[str, object] | None) -> "Sketch":
        """From the JSON form (``to_json``)."""
        if not data:
            return cls()
        bins = data.get("b") or {}
        if not isinstance(bins, Mapping):
            raise ValueError("sketch bins must be an object")
        zero = data.get("z") or 0.0
        if not isinstance(zero, int | float):
            raise ValueError("sketch zero weight must be a number")
        return cls({int(i): float(w) for i, w in bins.items()}, float(zero))

    @classmethod
    def of(cls, values: Iterable[float], weight: float = 1.0) -> "Sketch":
        sketch = cls()
        for value in values:
            sketch.add(value, weight)
        return sketch

    def histogram(self, bins: int) -> list[tuple[float, float, float]]:
        """(low, high, weight) for at most ``bins`` runs of consecutive
        buckets, equal in width on the log scale, from the lowest bucket to
        the highest; the zero bucket, if any, comes first as (0, 0, weight)."""
        out: list[tuple[float, float, float]] = []
        if self.zero > _EPSILON:
            out.append((0.0, 0.0, self.zero))
        if not self.bins:
            return out
        lowest, highest = min(self.bins), max(self.bins)
        per_bin = max(1, math.ceil((highest - lowest + 1) / max(1, bins)))
        folded: dict[int, float] = {}
        for index, weight in self.bins.items():
            slot = (index - lowest) // per_bin
            folded[slot] = folded.get(slot, 0.0) + weight
        for slot in range(max(folded) + 1):
            first = lowest + slot * per_bin
            # Bucket i holds (gamma^(i-1), gamma^i].
            out.append((GAMMA ** (first - 1), GAMMA ** (first + per_bin - 1), max(0.0, folded.get(slot, 0.0))))
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sketch):
            return NotImplemented
        if set(self.bins) != set(other.bins):
            return False
        return math.isclose(self.zero, other.zero, abs_tol=1e-6) and all(
            math.isclose(w, other.bins[i], rel_tol=1e-9, abs_tol=1e-6) for i, w in self.bins.items()
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Sketch(count={self.count:g}, buckets={len(self.bins)}, zero={self.zero:g})"


def dense_columns(zero: float, offset: int, weights: np.ndarray) -> tuple[float, int, bytes]:
    """A sketch's dense form, as a DimensionRollup row stores it, from an
    array of bucket weights starting at bucket ``offset``: (the zero
    bucket's weight, the lowest bucket, the little-endian float64 weights of
    every bucket from the lowest to the highest). Weights within dust of
    zero are emptied and the empty buckets at either end cut off first."""
    weights = np.where(np.abs(weights) < _EPSILON, 0.0, weights)
    kept = np.flatnonzero(weights)
    zero = 0.0 if abs(zero) < _EPSILON else float(zero)
    if not len(kept):
        return zero, 0, b""
    first, last = int(kept[0]), int(kept[-1])
    return zero, offset + first, weights[first : last + 1].astype("<f8").tobytes()


def dense_weights(data: bytes | memoryview) -> np.ndarray:
    """The bucket weights of a dense form's bytes (read-only, no copy)."""
    if len(data) % 8:
        raise ValueError("a dense sketch's weights are whole float64s")
    return np.frombuffer(data, dtype="<f8")


def add_dense(offset: int, weights: np.ndarray, other_offset: int, other_weights: np.ndarray) -> tuple[int, np.ndarray]:
    """The bucket-wise sum of two dense arrays of weights, as (offset, weights)."""
    if not len(other_weights):
        return offset, weights
    if not len(weights):
        return other_offset, other_weights
    start = min(offset, other_offset)
    end = max(offset + len(weights), other_offset + len(other_weights))
    out = np.zeros(end - start)
    out[offset - start : offset - start + len(weights)] += weights
    out[other_offset - start : other_offset - start + len(other_weights)] += other_weights
    return start, out


def _compact(weight: float) -> float | int:
    # Whole weights (no sampling) are stored as integers to keep rows small.
    return int(weight) if float(weight).is_integer() else round(weight, 9)


class DenseSum:
    """The sum of many stored sketches, kept as one float64 array over a
    contiguous range of buckets: adding a dense sketch is one vector
    addition, whatever its number of buckets."""

    __slots__ = ("offset", "weights", "zero")

    def __init__(self) -> None:
        self.offset = 0
        self.weights: np.ndarray | None = None
        self.zero = 0.0

    def add_dense(self, zero: float, offset: int, weights: bytes | memoryview) -> None:
        """Add a sketch in the dense form (``dense_columns``)."""
        self.zero += zero
        if weights:
            self._add(offset, dense_weights(weights))

    def add_json(self, data: Mapping[str, object] | None) -> None:
        """Add a sketch in the JSON form (``Sketch.to_json``)."""
        if not data:
            return
        zero = data.get("z") or 0.0
        if not isinstance(zero, int | float):
            raise ValueError("sketch zero weight must be a number")
        self.zero += zero
        bins = data.get("b") or {}
        if not isinstance(bins, Mapping):
            raise ValueError("sketch bins must be an object")
        if bins:
            indexes = [int(i) for i in bins]
            lowest = min(indexes)
            weights = np.zeros(max(indexes) - lowest + 1)
            for index, weight in zip(indexes, bins.values(), strict=True):
                weights[index - lowest] += float(weight)
            self._add(lowest, weights)

    def add(self, other: "DenseSum") -> None:
        self.zero += other.zero
        if other.weights is not None:
            self._add(other.offset, other.weights)

    def add_weights(self, lowest: int, weights: np.ndarray) -> None:
        """Add the weights of the buckets from ``lowest`` on (``dense_sums``' answer)."""
        self._add(lowest, weights)

    def _add(self, lowest: int, weights: np.ndarray) -> None:
        if self.weights is None:
            self.offset, self.weights = lowest, weights.astype("<f8", copy=True)
            return
        end, current_end = lowest + len(weights), self.offset + len(self.weights)
        if lowest < self.offset or end > current_end:
            start = min(lowest, self.offset)
            grown = np.zeros(max(end, current_end) - start)
            grown[self.offset - start : current_end - start] = self.weights
            self.offset, self.weights = start, grown
        self.weights[lowest - self.offset : end - self.offset] += weights

    def quantile(self, q: float) -> float | None:
        """Sketch.quantile's answer, from a cumulative sum instead of a
        Python loop over the buckets."""
        return dense_quantiles([self], q)[0]

    def sketch(self) -> Sketch:
        """As a Sketch, buckets whose weights cancelled out dropped."""
        if self.weights is None:
            return Sketch(zero=0.0 if abs(self.zero) < _EPSILON else self.zero)
        kept = np.flatnonzero(np.abs(self.weights) >= _EPSILON)
        return Sketch(
            {self.offset + int(i): float(self.weights[i]) for i in kept},
            0.0 if abs(self.zero) < _EPSILON else self.zero,
        )


def dense_quantiles(sums: Sequence[DenseSum], q: float) -> list[float | None]:
    """The quantile ``q`` of each sum (``Sketch.quantile``'s rule), in a few
    array operations for all of them: a dashboard asks hundreds at once
    (every route's every metric, every sparkline point), and numpy's fixed
    cost per call was most of each answer's when they were asked one by one.

    The weights are laid side by side in one zero-filled 2-D array, each row
    aligned on its buckets, so that a row's cumulative sum is the same
    additions in the same order as the sum's alone: zeros before its lowest
    bucket add nothing, and those after it repeat its total. Pass sums over
    similar buckets (one metric's) to keep the array narrow."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be between 0 and 1, not {q}")
    answers: list[float | None] = [None] * len(sums)
    filled: list[tuple[int, DenseSum, np.ndarray]] = []
    for i, dense in enumerate(sums):
        if dense.weights is None:
            answers[i] = 0.0 if dense.zero > _EPSILON else None
        else:
            filled.append((i, dense, dense.weights))
    if not filled:
        return answers
    lowest = min(dense.offset for _, dense, _ in filled)
    highest = max(dense.offset + len(weights) for _, dense, weights in filled)
    grid = np.zeros((len(filled), highest - lowest))
    for row, (_, dense, weights) in enumerate(filled):
        start = dense.offset - lowest
        grid[row, start : start + len(weights)] = weights
    zeros = np.array([dense.zero for _, dense, _ in filled])
    zeros[np.abs(zeros) < _EPSILON] = 0.0
    cumulative = np.cumsum(grid, axis=1)
    cumulative += zeros[:, None]
    totals = cumulative[:, -1]
    targets = q * totals - _EPSILON
    reached = (cumulative > _EPSILON) & (cumulative >= targets[:, None])
    first = reached.argmax(axis=1)
    for row, (i, _, _) in enumerate(filled):
        if totals[row] <= _EPSILON:
            continue
        if zeros[row] > _EPSILON and zeros[row] >= targets[row]:
            answers[i] = 0.0
        elif reached[row, first[row]]:
            answers[i] = bucket_value(lowest + int(first[row]))
        else:
            answers[i] = bucket_value(lowest + int(np.flatnonzero(np.abs(grid[row]) >= _EPSILON)[-1]))
    return answers


def dense_sums(
    groups: int, group_of_block: Sequence[int], offsets: Sequence[int], blocks: Sequence[np.ndarray]
) -> list[tuple[int, np.ndarray] | None]:
    """The bucket-wise sums of many dense sketches' weights (``dense_weights``
    of the bytes of ``dense_columns``, block ``i`` starting at bucket
    ``offsets[i]`` and belonging to group ``group_of_block[i]``), as (lowest
    bucket, weights) per group, None for a group without any.

    Each group's range of buckets is found first, so that its array is made
    once and every block added into it in place: a dashboard merges
    thousands of blocks per query. (One bincount over all the blocks at once
    was faster on an idle machine, but moves four times the memory and was
    the slower of the two under load.) The sums are bit for bit those of
    ``DenseSum.add_dense`` block by block."""
    lows: dict[int, int] = {}
    highs: dict[int, int] = {}
    for group, offset, weights in zip(group_of_block, offsets, blocks, strict=True):
        end = offset + len(weights)
        if group not in lows:
            lows[group], highs[group] = offset, end
        else:
            lows[group], highs[group] = min(lows[group], offset), max(highs[group], end)
    sums = {group: np.zeros(highs[group] - low) for group, low in lows.items()}
    for group, offset, weights in zip(group_of_block, offsets, blocks, strict=True):
        start = offset - lows[group]
        sums[group][start : start + len(weights)] += weights
    return [(lows[group], sums[group]) if group in sums else None for group in range(groups)]
