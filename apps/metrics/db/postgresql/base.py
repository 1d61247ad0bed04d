# django-prometheus' backend as it is: it builds its cursor class once.
from django_prometheus.db.backends.postgresql.base import DatabaseWrapper

__all__ = ["DatabaseWrapper"]
