"""prometheus-client's multiprocess mode with a cheaper write per sample.

In multiprocess mode each process keeps its values in memory-mapped files in
PROMETHEUS_MULTIPROC_DIR, one file per metric type (and gauge mode) and
process id, and a scrape sums the files of all processes. prometheus-client's
value class (values.MultiProcessValue) makes every write of a value (a
counter's inc, a histogram's observe, a gauge's set) go through four Python
calls: the fork check, which calls os.getpid() by default (a system call:
glibc does not cache the pid), the file's write_value, its position lookup
and the packing of the two doubles. An instrumented request writes about
fifteen values, a beacon twelve.

``LeanMmapedValue`` is that class with each write reduced to one packing into
the file at the position found when the value was created. It writes the
same files, under the same names and with the same keys (prometheus-client's
MmapedDict and mmap_key), so MultiProcessCollector and mark_process_dead read
and clean them as before. The fork check compares the pid read once per
process (os.register_at_fork reads it again in every child, the only moment
it can change) with the pid the files were opened for; after a fork, as
prometheus-client does, every value is re-read from files of the child's
own. timeit: 1.1 µs a counter increment, against 2.2 µs with
prometheus-client's class (os.getpid as the fork check).

Written here, on prometheus-client's own file format and helpers, because
the library has no option for a cheaper write; bench/overhead.py and
bench/ingest.py measure what it is for.
"""

import os
import struct
import threading
from typing import Any

from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict, mmap_key

_pid = os.getpid()


def _read_pid_after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_read_pid_after_fork)


def process_id() -> int:
    """os.getpid(), without its system call: the pid read once per process."""
    return _pid


# As prometheus-client's class: one lock for all values of the process, which
# also guards the files (MmapedDict has no lock of its own).
_lock = threading.Lock()
# Open files by prefix ("counter", "gauge_livesum", ...), the process they
# were opened for, and every value, to re-read after a fork.
_files: dict[str, MmapedDict] = {}
_files_pid = _pid
_values: list["LeanMmapedValue"] = []
# Written as MmapedDict writes a value: a whole 16-byte slice assignment,
# never struct.pack_into, which zeroes the slot first and so can let a
# concurrent scrape read 0.
_pack_value = struct.Struct("dd").pack


def _after_fork() -> None:
    """In a forked child, on its first write: the parent's files are the
    parent's; each value is re-read from a file of this process's own.
    Called with _lock held."""
    global _files_pid
    for file in _files.values():
        file.close()
    _files.clear()
    _files_pid = _pid
    for value in _values:
        value._open()


def _close_files() -> None:
    # values.close_all_multiprocess_files, as prometheus-client's own
    # class registers it.
    with _lock:
        for file in _files.values():
            file.close()
        _files.clear()
        _values.clear()


class LeanMmapedValue:
    """A float in a per-process memory-mapped file (see the module's
    docstring)."""

    _multiprocess = True

    def __init__(
        self,
        typ: str,
        metric_name: str,
        name: str,
        labelnames: Any,
        labelvalues: Any,
        help_text: str,
        multiprocess_mode: str = "",
        **kwargs: Any,
    ) -> None:
        self._file_prefix = f"{typ}_{multiprocess_mode}" if typ == "gauge" else typ
        self._key = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
        with _lock:
            if _files_pid != _pid:
                _after_fork()
            self._open()
            _values.append(self)

    def _open(self) -> None:
        """Find (or add) this value in its file. Called with _lock held."""
        file = _files.get(self._file_prefix)
        if file is None:
            directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
            file = _files[self._file_prefix] = MmapedDict(os.path.join(directory, f"{self._file_prefix}_{_pid}.db"))
        self._file = file
        self._value, self._timestamp = file.read_value(self._key)
        # A value never moves in its file; the file's mapping may be
        # replaced when it grows, so it is looked up on each write.
        self._position = file._positions[self._key]

    def _write(self) -> None:
        position = self._position
        self._file._m[position : position + 16] = _pack_value(self._value, self._timestamp)

    def inc(self, amount: float) -> None:
        with _lock:
            if _files_pid != _pid:
                _after_fork()
            self._value += amount
            self._timestamp = 0.0
            self._write()

    def set(self, value: float, timestamp: float | None = None) -> None:
        with _lock:
            if _files_pid != _pid:
                _after_fork()
            self._value = value
            self._timestamp = timestamp or 0.0
            self._write()

    def set_exemplar(self, exemplar: Any) -> None:
        # As prometheus-client: no exemplars in multiprocess mode.
        return

    def get(self) -> float:
        with _lock:
            if _files_pid != _pid:
                _after_fork()
            return self._value

    def get_exemplar(self) -> None:
        return None


_installed = False


def use_lean_values() -> None:
    """Make the multiprocess values created from now on LeanMmapedValue. Must
    run before the first metric value is created (perfhub.settings calls
    it; Django loads the apps, and so the metrics, after the settings):
    values of two classes would each keep a map of their own of the same
    file. Does nothing outside multiprocess mode (PROMETHEUS_MULTIPROC_DIR
    unset when prometheus_client was imported), nor a second time."""
    global _installed
    if not _installed and values.ValueClass._multiprocess:
        values.ValueClass = LeanMmapedValue
        values._multi_process_cleanups.append(_close_files)
        _installed = True
