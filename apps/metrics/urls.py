from django.urls import path

from apps.metrics import apis, views

urlpatterns = [
    path("performance/metrics", views.PrometheusMetricsView.as_view(), name="performance-metrics"),
    path("performance/ops", apis.OpsOverviewApi.as_view(), name="performance-ops"),
]
