"""django-prometheus' request middleware with its label children kept.

PrometheusAfterMiddleware looks up five to seven labelled children per
request; prometheus-client's ``labels()`` turns the values into strings,
takes the metric's lock and searches its children each time. The children
of a metric never change, so each one is looked up once per process and
kept here, as many as the metric itself holds (views, methods, statuses).
"""

from typing import Any

from django.http import HttpRequest, HttpResponse
from django_prometheus import middleware


class PrometheusAfterMiddleware(middleware.PrometheusAfterMiddleware):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._children: dict[tuple[Any, ...], Any] = {}

    def label_metric(
        self, metric: Any, request: HttpRequest, response: HttpResponse | None = None, **labels: Any
    ) -> Any:
        if not labels:
            return metric
        # Each call site passes the same label names in the same order.
        key = (metric, *labels.values())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(**labels)
        return child
