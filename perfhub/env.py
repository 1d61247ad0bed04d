"""Typed readers for environment variables.

Every knob of PerfHub is an environment variable with a default that lets a
newcomer run at once. A mistyped value must stop the process at start-up with
a message naming the variable, not surface later as odd behaviour, so each
reader validates and raises ``ImproperlyConfigured``.
"""

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be True or False, not {raw!r}.")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, not {value}.")
    return value


def env_float(name: str, default: float, *, minimum: float, maximum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}.") from None
    if not minimum <= value <= maximum:
        raise ImproperlyConfigured(f"{name} must be between {minimum} and {maximum}, not {value}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_from_url(url: str, *, engine_prefix: str, conn_options: dict[str, object]) -> dict[str, object]:
    """Turn ``postgres://user:pass@host:port/name?sslmode=require`` or
    ``sqlite:////absolute/path.sqlite3`` into a Django DATABASES entry.

    Written by hand rather than with dj-database-url because PerfHub accepts
    exactly two schemes and wraps both in django-prometheus backends, which
    that library does not know.
    """
    parts = urlsplit(url)
    if parts.scheme in {"postgres", "postgresql"}:
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise ImproperlyConfigured(
                "DATABASE_URL must name a database, e.g. postgres://postgres@127.0.0.1:5432/perfhub."
            )
        options: dict[str, object] = dict(conn_options)
        for key, values in parse_qs(parts.query).items():
            options[key] = values[-1]
        return {
            "ENGINE": f"{engine_prefix}.postgresql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "OPTIONS": options,
        }
    if parts.scheme == "sqlite":
        # As in SQLAlchemy: three slashes, then the path; an absolute path
        # therefore shows four.
        path = unquote(parts.path)[1:]
        if parts.netloc or not path.startswith("/"):
            raise ImproperlyConfigured(
                "A sqlite DATABASE_URL needs an absolute path: sqlite:////var/lib/perfhub/db.sqlite3."
            )
        return {"ENGINE": f"{engine_prefix}.sqlite3", "NAME": path}
    raise ImproperlyConfigured(
        f"DATABASE_URL must start with postgres:// or sqlite://, not {parts.scheme + '://' if parts.scheme else url!r}."
    )


def data_dir() -> Path:
    """Where PerfHub keeps its files: the SQLite database, the generated
    secret key, collected static files, Prometheus multiprocess files."""
    path = Path(env_str("PERFHUB_DATA_DIR") or Path(__file__).resolve().parent.parent / "var").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_web_workers() -> int:
    """gunicorn workers unless PERFHUB_WEB_WORKERS says otherwise: one per
    CPU this process may run on, and one more. A sync worker waits, idle,
    on each Redis or database round trip; with only as many workers as
    CPUs, beacons left a tenth of two CPUs unused, and a third worker
    served a tenth more of them (bench/ingest.py --workers 2 and 3, in
    bench/README.md). In a container, set it to match the CPU limit: the
    affinity mask shows the node's CPUs, not the limit."""
    return len(os.sched_getaffinity(0)) + 1
