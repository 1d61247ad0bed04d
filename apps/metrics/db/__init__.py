"""Database backends for PERFHUB_INSTRUMENT=True (``apps.metrics.db.sqlite3``,
``apps.metrics.db.postgresql``): django-prometheus' connection counters and
query metrics, and the spans of traced requests, through one cursor wrapper
(apps.metrics.db.cursor)."""
