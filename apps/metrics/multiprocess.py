"""prometheus-client's multiprocess mode without a getpid() per sample.

In multiprocess mode every write of a value (a counter's inc, a histogram's
observe, a gauge's set) first asks its process identifier, os.getpid() by
default, whether the process has forked since the last write, so that a
forked child writes to files of its own. glibc does not cache the pid, so
that is a system call per write: about fifteen per API request, a tenth of
the system calls an instrumented request makes beyond an uninstrumented one
(strace -c on a gunicorn worker under bench/overhead.py's load).

Here the identifier is the pid read once and read again in every child
right after a fork (os.register_at_fork), which is the only moment it can
change; prometheus-client then sees the change on the child's first write,
as before.
"""

import os

from prometheus_client import values

_pid = os.getpid()


def _read_pid_after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_read_pid_after_fork)


_value_class: type | None = None


def process_identifier() -> int:
    return _pid


def use_cached_pid() -> None:
    """Make the multiprocess values created from now on take the pid from
    process_identifier. Must run before the first metric value is created
    (perfhub.settings calls it; Django loads the apps, and so the metrics,
    after the settings): values of two value classes would each keep a map
    of their own of the same file. Does nothing outside multiprocess mode
    (PROMETHEUS_MULTIPROC_DIR unset when prometheus_client was imported),
    nor a second time."""
    global _value_class
    if _value_class is None and values.ValueClass._multiprocess:
        _value_class = values.ValueClass = values.MultiProcessValue(process_identifier=process_identifier)
