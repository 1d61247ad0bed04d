"""PerfHub settings: one module, every knob an environment variable.

With no environment at all PerfHub runs on the embedded default (SQLite and
the local-memory cache, data under ./var). Setting DATABASE_URL and REDIS_URL
moves it to the production path. See docs/configuration.md for every variable.
"""

import logging
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from apps.metrics.logging import use_cached_process_id
from apps.metrics.multiprocess import use_lean_values
from perfhub.env import (
    data_dir,
    database_from_url,
    default_web_workers,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
)

# Before the apps are loaded, and with them the first Prometheus metric.
use_lean_values()

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = data_dir()

DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated on first start and
    kept in the data directory so sessions survive restarts. Replicas of one
    deployment must share a key, so production sets SECRET_KEY explicitly."""
    from_env = env_str("SECRET_KEY")
    if from_env:
        if len(from_env) < 50:
            raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters long.")
        return from_env
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.touch(mode=0o600)
        key_file.write_text(secrets.token_urlsafe(64))
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Behind TLS (PERFHUB_HTTPS=True) cookies are secure, HSTS is sent and plain
# HTTP is redirected. Off by default because the embedded default serves
# http://127.0.0.1:8000, where secure cookies would make logging in impossible.
HTTPS = env_bool("PERFHUB_HTTPS", False)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("PERFHUB_HSTS_SECONDS", 31_536_000 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = env_bool("PERFHUB_HSTS_PRELOAD", HTTPS)
if env_bool("PERFHUB_TRUST_X_FORWARDED_PROTO", False):
    # Only behind a proxy that always sets the header; otherwise a client
    # could claim HTTPS.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Prometheus scrapes each pod by IP over plain HTTP (with a bearer token);
# redirecting it to HTTPS would fail every scrape.
SECURE_REDIRECT_EXEMPT = [r"^api/v1/performance/metrics$"]
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env_int("PERFHUB_SESSION_HOURS", 12, minimum=1) * 3600

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "django_prometheus",
    "template_partials",
    "csp",
    "apps.core",
    "apps.vitals",
    "apps.metrics",
    "apps.database",
    "apps.cache",
    "apps.resilience",
    "apps.backups",
    "apps.alerts",
]

MIDDLEWARE = [
    # Probes answer before host validation and the HTTPS redirect: Kubernetes
    # calls them by pod IP over plain HTTP.
    "apps.resilience.middleware.ProbeMiddleware",
    # Request id and log line, Server-Timing, Prometheus request series.
    "apps.metrics.middleware.InstrumentationMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Beacons answered here, past the session, CSRF and template machinery.
    "apps.vitals.middleware.BeaconMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

# PERFHUB_INSTRUMENT=False drops every piece of self-instrumentation
# (Prometheus, request log, Server-Timing); bench/overhead.py uses it as the
# baseline. Tracing has its own switch, the standard OTEL_* variables.
INSTRUMENT = env_bool("PERFHUB_INSTRUMENT", True)
if not INSTRUMENT:
    MIDDLEWARE = [m for m in MIDDLEWARE if not m.startswith(("django_prometheus.", "apps.metrics."))]

ROOT_URLCONF = "perfhub.urls"
WSGI_APPLICATION = "perfhub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.core.context_processors.navigation",
                "apps.vitals.context_processors.rum_snippet",
                "apps.resilience.context_processors.degradation",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------

# django-prometheus' backends, the SQLite one without its per-query cost.
_db_engines = "apps.metrics.db" if INSTRUMENT else "django.db.backends"
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    _default_db = database_from_url(
        DATABASE_URL,
        engine_prefix=_db_engines,
        conn_options={
            "connect_timeout": env_int("PERFHUB_DB_CONNECT_TIMEOUT", 5, minimum=1),
            "application_name": env_str("PERFHUB_DB_APPLICATION_NAME", "perfhub"),
        },
    )
else:
    _default_db = {"ENGINE": f"{_db_engines}.sqlite3", "NAME": str(DATA_DIR / "perfhub.sqlite3")}

if str(_default_db["ENGINE"]).endswith("postgresql"):
    # Django's psycopg 3 pool (one per process). It replaces persistent
    # connections, so CONN_MAX_AGE must stay 0.
    _default_db["OPTIONS"]["pool"] = {  # type: ignore[index]
        "min_size": env_int("PERFHUB_DB_POOL_MIN_SIZE", 1, minimum=0),
        "max_size": env_int("PERFHUB_DB_POOL_MAX_SIZE", 10, minimum=1),
        "timeout": env_int("PERFHUB_DB_POOL_TIMEOUT", 10, minimum=1),
    }
else:
    _default_db["OPTIONS"] = {
        # WAL lets dashboards read while the worker writes; IMMEDIATE takes
        # the write lock at BEGIN so concurrent writers wait (busy timeout)
        # instead of failing with "database is locked" mid-transaction.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A file, not :memory:, so that tests can start gunicorn and browsers
    # against the same test database.
    _default_db["TEST"] = {"NAME": str(Path(str(_default_db["NAME"])).with_name("test_perfhub.sqlite3"))}

DATABASES = {"default": _default_db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ----------------------------------------------------------------

REDIS_URL = env_str("REDIS_URL")
# The instrumented backends add Prometheus counters and Server-Timing.
# Behind the redis-cache circuit breaker: while Redis fails the cache is
# bypassed (reads miss, writes are dropped) instead of failing requests.
_redis_backend = (
    "apps.resilience.cache.ResilientRedisCache" if INSTRUMENT else "apps.resilience.cache.PlainResilientRedisCache"
)
_locmem_backend = (
    "apps.metrics.cache_backends.LocMemCache" if INSTRUMENT else "django.core.cache.backends.locmem.LocMemCache"
)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": _redis_backend,
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "perfhub",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                # Short timeouts: a slow Redis must not hold a request; the
                # circuit breaker and readiness probe take it from there.
                "SOCKET_CONNECT_TIMEOUT": env_float("PERFHUB_REDIS_CONNECT_TIMEOUT", 1.0, minimum=0.05, maximum=30),
                "SOCKET_TIMEOUT": env_float("PERFHUB_REDIS_TIMEOUT", 1.0, minimum=0.05, maximum=30),
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": _locmem_backend,
            "LOCATION": "perfhub",
        }
    }

SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# Seconds the stats API endpoints keep a computed body in the shared cache
# for pollers (apps.cache.response_cache); 0 turns that off.
STATS_CACHE_SECONDS = env_int("PERFHUB_STATS_CACHE_SECONDS", 5, minimum=0, maximum=300)

# --- Auth -----------------------------------------------------------------

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "core:overview"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Static files -----------------------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed names, so WhiteNoise can serve them with a one-year cache.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Content-Security-Policy ------------------------------------------------

# No inline script or style anywhere: htmx, uPlot and our own scripts are
# files under 'self'. htmx's own inline indicator styles are switched off in
# base.html for the same reason.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "object-src": ["'none'"],
    }
}

# --- API --------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.core.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.core.permissions.IsStaffOrReadToken"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "PerfHub API",
    "DESCRIPTION": "Real-user monitoring and operations insight. Authenticate with a session or "
    "`Authorization: Bearer <token>` (tokens are created on the API tokens page).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["apps.core.permissions.IsStaffOrReadToken"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Operations -------------------------------------------------------------

WEB_WORKERS = env_int("PERFHUB_WEB_WORKERS", default_web_workers(), minimum=1, maximum=64)
LOG_JSON = env_bool("PERFHUB_LOG_JSON", False)
LOG_LEVEL = env_str("PERFHUB_LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"PERFHUB_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {LOG_LEVEL!r}.")

# No log format shows a thread or a multiprocessing process name; without
# them a LogRecord, one per request, skips looking them up (the logging
# documentation's switches for this, "Optimization"). gunicorn's format shows
# the process id, which records take from the pid read once per process.
logging.logThreads = False
logging.logMultiprocessing = False
use_cached_process_id()

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "apps.metrics.logging.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "apps.metrics.logging.JsonFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            # JSON lines: a StreamHandler the request log can write to directly.
            "class": "apps.metrics.logging.JsonLinesHandler" if LOG_JSON else "logging.StreamHandler",
            "formatter": "json" if LOG_JSON else "plain",
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # The request log replaces Django's own per-request warnings for 4xx.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
    },
}

# --- Resilience and health ----------------------------------------------------

# Seconds an open circuit breaker waits before letting trial calls through;
# 0 keeps each breaker's own (15 s, see apps/resilience/breakers.py).
BREAKER_RESET_SECONDS = env_float("PERFHUB_BREAKER_RESET_SECONDS", 0, minimum=0, maximum=3600)
# Each health check is reported down after this many seconds.
HEALTH_CHECK_TIMEOUT = env_float("PERFHUB_HEALTH_TIMEOUT", 3.0, minimum=0.1, maximum=60)
# Beacon stream entries not yet in the database: degraded, then down.
HEALTH_BACKLOG_DEGRADED = env_int("PERFHUB_HEALTH_BACKLOG_DEGRADED", 10_000, minimum=1)
HEALTH_BACKLOG_DOWN = env_int("PERFHUB_HEALTH_BACKLOG_DOWN", 1_000_000, minimum=1)
# Free space left on the data directory's file system, in percent.
HEALTH_DISK_DEGRADED_PERCENT = env_float("PERFHUB_HEALTH_DISK_DEGRADED_PERCENT", 10, minimum=0, maximum=100)
HEALTH_DISK_DOWN_PERCENT = env_float("PERFHUB_HEALTH_DISK_DOWN_PERCENT", 2, minimum=0, maximum=100)
# A last successful backup older than this is reported degraded.
HEALTH_BACKUP_MAX_AGE_HOURS = env_int("PERFHUB_HEALTH_BACKUP_MAX_AGE_HOURS", 26, minimum=1)

# --- Real-user monitoring ---------------------------------------------------

# Beacons per minute, per client IP and per site, over all workers.
VITALS_RATE_LIMIT_PER_IP = env_int("PERFHUB_RATE_LIMIT_PER_IP", 600, minimum=1)
VITALS_RATE_LIMIT_PER_SITE = env_int("PERFHUB_RATE_LIMIT_PER_SITE", 120_000, minimum=1)
# Trusted proxies in front of PerfHub that append to X-Forwarded-For; 0 uses
# the connection's address. Never more than the real number of proxies, or
# clients could choose their own address.
PROXY_COUNT = env_int("PERFHUB_PROXY_COUNT", 0, minimum=0, maximum=5)
# A MaxMind GeoLite2/GeoIP2 Country or City database; unset: no countries.
GEOIP_PATH = env_str("GEOIP_PATH")

# Seconds between worker heartbeats; the readiness and health checks call a
# worker dead after three missed beats.
WORKER_HEARTBEAT_SECONDS = env_int("PERFHUB_WORKER_HEARTBEAT_SECONDS", 10, minimum=1)

# --- Ops overview and query insight (apps.metrics) ----------------------------

# A Prometheus server scraping every replica: the ops page then reads its
# history over PromQL instead of this host's own registry.
PROMETHEUS_URL = env_str("PROMETHEUS_URL").rstrip("/")
if PROMETHEUS_URL and not PROMETHEUS_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"PROMETHEUS_URL must start with http:// or https://, not {PROMETHEUS_URL!r}.")
PROMETHEUS_TIMEOUT = env_float("PERFHUB_PROMETHEUS_TIMEOUT", 2.0, minimum=0.1, maximum=30)
# Share of requests whose SQL is recorded for the N+1 and duplicate report;
# 0 turns query insight off.
QUERY_SAMPLE_RATE = env_float("PERFHUB_QUERY_SAMPLE_RATE", 0.01, minimum=0.0, maximum=1.0)
NPLUSONE_THRESHOLD = env_int("PERFHUB_NPLUSONE_THRESHOLD", 5, minimum=2, maximum=10_000)
