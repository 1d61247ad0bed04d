"""Request-scoped logging: the request id on every line, JSON on demand.

The JSON formatter is a few lines written here rather than a dependency: it
only has to put the record's fields and our extras into one object.
"""

import itertools
import json
import logging
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, cast

import orjson

from apps.metrics.multiprocess import process_id

request_id_var: ContextVar[str] = ContextVar("perfhub_request_id", default="-")

# Attributes every LogRecord has; anything else was passed with extra=.
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# LogRecord sets these first, then makeRecord adds the extras and filters
# add theirs: the formatter looks only past them.
_FIRST_EXTRA = len(vars(logging.LogRecord("", 0, "", 0, "", None, None)))

# The fallback for what orjson refuses (integers past 64 bits, keys that are
# not strings). One encoder for every such line: json.dumps(..., default=str)
# would build a new one per call.
_ENCODER = json.JSONEncoder(default=str)


def use_cached_process_id() -> None:
    """Make every LogRecord take its process id from
    apps.metrics.multiprocess.process_id rather than os.getpid(), a system
    call per record (glibc does not cache the pid), i.e. per request: it was
    a sixth of a request log line's cost on a beacon (py-spy). Chains to the
    factory in place; perfhub.settings calls it, and a second call does
    nothing."""
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "takes_cached_process_id", False):
        return

    def record_with_process_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.process = process_id()
        return record

    record_with_process_id.takes_cached_process_id = True  # type: ignore[attr-defined]
    logging.logProcesses = False  # LogRecord then leaves process to the factory
    logging.setLogRecordFactory(record_with_process_id)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The formatted second a line was logged in, reused by the lines of
        # the same second: a datetime built and formatted per line was a
        # fifth of the formatter's cost. One tuple, replaced whole, so a
        # thread never pairs one second with another's text.
        self._second: tuple[int, str] = (-1, "")

    def _time(self, record: logging.LogRecord) -> str:
        return self.time_text(record.created, record.msecs)

    def time_text(self, created: float, msecs: float) -> str:
        """A line's time (``created`` as LogRecord has it, in seconds) as
        ISO 8601 in UTC with milliseconds, as
        ``datetime.isoformat(timespec="milliseconds")`` writes it."""
        second, text = self._second
        if second != int(created):
            second = int(created)
            text = datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (second, text)
        return f"{text}.{int(msecs):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry = _line_start(self._time(record), record.levelname, record.name, record.getMessage())
        for key, value in itertools.islice(vars(record).items(), _FIRST_EXTRA, None):
            if key not in _STANDARD_ATTRS:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry)


def _line_start(time_text: str, level_name: str, logger_name: str, message: str) -> dict[str, object]:
    """The fields every JSON line starts with, in their order."""
    return {"time": time_text, "level": level_name, "logger": logger_name, "message": message}


def _encode(entry: dict[str, object]) -> str:
    # orjson: every request writes a line, and orjson encoded one in 0.6
    # microseconds against the json module's 6.8 (timeit, a request line's
    # fields). Its output differs only in spacing, in datetimes (ISO 8601
    # rather than str()) and in writing non-ASCII as UTF-8.
    try:
        return orjson.dumps(entry, default=str).decode()
    except TypeError:
        return _ENCODER.encode(entry)


class JsonLinesHandler(logging.StreamHandler):
    """The console handler with PERFHUB_LOG_JSON on: a StreamHandler whose
    JsonFormatter lines the request log can also write directly.

    Every request writes a line, and going through logging (a LogRecord,
    Logger.handle walking the loggers, Handler.handle, the filter, the
    formatter) cost about 10 microseconds of a beacon's 200 more than
    writing the same line (py-spy, and the beacon in-process, measured with
    and without). ``request_line_handler`` says when the direct way gives
    what logging would: when this handler alone would write the line."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())

    def write_line(self, logger_name: str, level: int, message: str, fields: dict[str, object]) -> None:
        """The line JsonFormatter would write for a record of ``logger_name``
        at ``level`` with ``message`` and ``fields`` as extras, the
        request id after them as RequestIdFilter adds it."""
        created = time.time()
        # As LogRecord works out its milliseconds.
        msecs = int((created - int(created)) * 1000) + 0.0
        # request_line_handler hands out only handlers with a JsonFormatter.
        formatter = cast(JsonFormatter, self.formatter)
        entry = _line_start(formatter.time_text(created, msecs), logging.getLevelName(level), logger_name, message)
        entry.update(fields)
        entry.setdefault("request_id", request_id_var.get())
        line = _encode(entry) + self.terminator
        with self.lock:  # type: ignore[union-attr]  # as Handler.handle holds it around emit
            try:
                self.stream.write(line)
                self.flush()
            except Exception:
                self.handleError(logging.makeLogRecord({"name": logger_name, "levelno": level, "msg": message}))


def request_line_handler(logger: logging.Logger, level: int) -> JsonLinesHandler | None:
    """The JsonLinesHandler that alone would write ``logger``'s lines at
    ``level``, with no filter on the way but the request id's; None when
    any other handler or filter would see them (a test's caplog, a handler
    added by configuration), and the line must go through logging. The
    caller has checked ``logger.isEnabledFor(level)``."""
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return None
        for handler in current.handlers:
            if found is not None:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if type(found) is not JsonLinesHandler or level < found.level or type(found.formatter) is not JsonFormatter:
        return None
    for candidate in found.filters:
        if type(candidate) is not RequestIdFilter:
            return None
    return found
