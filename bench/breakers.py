"""The cost of the redis-cache circuit breaker on the cache's hot path.

In one process, against the Redis of REDIS_URL: cache.get of one key through
the breaker (apps.resilience.cache) and, as the baseline measured in the
same run, the same call past it (``cache.unguarded()``), in alternating
rounds. Also a no-op guarded call, to show the breaker's own cost.

    REDIS_URL=redis://127.0.0.1:6379/12 .venv/bin/python bench/breakers.py [--calls 20000 --rounds 5]

Last line: {"guarded_us": …, "unguarded_us": …, "ratio": …, "noop_call_us": …}
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "perfhub.settings")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not os.environ.get("REDIS_URL"):
        sys.exit("set REDIS_URL: the bench measures the Redis cache")

    import django

    django.setup()
    from django.core.cache import cache

    from apps.resilience.breakers import breaker

    cache.set("bench:breaker", "x" * 100, timeout=600)
    unguarded = cache.unguarded()  # type: ignore[attr-defined]
    guarded_get, raw_get = cache.get, unguarded.get

    def per_call_us(get: object) -> float:
        start = time.perf_counter()
        for _ in range(args.calls):
            get("bench:breaker")  # type: ignore[operator]
        return (time.perf_counter() - start) / args.calls * 1e6

    per_call_us(guarded_get)  # warm up connections and the breaker's state
    guarded, raw = [], []
    for _ in range(args.rounds):
        guarded.append(per_call_us(guarded_get))
        raw.append(per_call_us(raw_get))
    b = breaker("bench-noop")
    start = time.perf_counter()
    for _ in range(args.calls):
        b.call(int)
    noop = (time.perf_counter() - start) / args.calls * 1e6
    g, r = statistics.median(guarded), statistics.median(raw)
    print(f"cache.get through the breaker: {g:.1f} µs; past it: {r:.1f} µs (median of {args.rounds} rounds)")
    print(f"a guarded no-op call: {noop:.1f} µs")
    print(
        json.dumps(
            {
                "guarded_us": round(g, 2),
                "unguarded_us": round(r, 2),
                "ratio": round(g / r, 3),
                "noop_call_us": round(noop, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
