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
from collections.abc import Iterable, Mapping

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

    @classmethod
    def from_json(cls, data: Mapping[str, object] | None) -> "Sketch":
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


def _compact(weight: float) -> float | int:
    # Whole weights (no sampling) are stored as integers to keep rows small.
    return int(weight) if float(weight).is_integer() else round(weight, 9)
