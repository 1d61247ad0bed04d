from django.urls import path

from apps.metrics import views

urlpatterns = [
    path("performance/metrics", views.PrometheusMetricsView.as_view(), name="performance-metrics"),
]
