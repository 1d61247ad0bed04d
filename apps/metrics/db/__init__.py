"""Database backends for PERFHUB_INSTRUMENT=True: django-prometheus' own,
by the same names (``apps.metrics.db.sqlite3``, ``apps.metrics.db.postgresql``),
with one fix for SQLite (see apps.metrics.db.sqlite3.base)."""
