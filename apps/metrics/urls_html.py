"""PerfHub's own operations pages, under /ops/; the metrics endpoint and the
API are in apps.metrics.urls, under /api/v1/."""

from django.urls import path

from apps.metrics import views

app_name = "metrics"

urlpatterns = [
    path("", views.ops, name="ops"),
]
