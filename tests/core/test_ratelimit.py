"""LocalCounts, the process's view of the rate-limit counters: what it
decides from what it knows, without Redis (the stream's tests cover it with
Redis, in tests/vitals/test_stream.py)."""

from apps.core.ratelimit import Claim, Limit, LocalCounts, Window


def _window(start: int) -> Window:
    limits = [Limit("vitals-ip", "198.51.100.20", 4)]
    # The same key in both windows, so that only the window's start can tell
    # the counts of one from the other's.
    return Window(limits, ["perfhub:rl:vitals-ip:198.51.100.20"], 60, 30, start)


def test_a_counter_known_past_its_limit_refuses_until_the_window_ends() -> None:
    counts = LocalCounts()
    window = _window(start=6000)
    counts.learned(window.start, {window.keys[0]: 5})
    assert counts.claim(window).refused == window.limits[0]
    # The next window starts from nothing: counted in process again.
    later = _window(start=6060)
    claim = counts.claim(later)
    assert claim.refused is None
    # A late request of the earlier window is left to Redis, counted once.
    assert counts.claim(window).exact == [1]


def test_far_below_the_limit_requests_are_counted_in_process_until_its_half() -> None:
    counts = LocalCounts()
    counts.FLUSH_SECONDS = 3600.0
    window = _window(start=6000)
    # The first request of a process goes to Redis (nothing known yet) ...
    first = counts.claim(window)
    assert (first.exact, first.flush) == ([1], {})
    counts.learned(window.start, {window.keys[0]: 1})
    # ... the next is counted here (1 known + 1 = 2, half of 4) ...
    assert counts.claim(window) == Claim()
    # ... and past half of the limit each goes to Redis, its pending count along.
    assert counts.claim(window).exact == [2]
