from django.urls import path

from apps.resilience import apis

urlpatterns = [
    path("performance/health", apis.HealthView.as_view(), name="performance-health"),
    path("performance/resilience", apis.ResilienceView.as_view(), name="performance-resilience"),
    path(
        "performance/reset-circuit-breakers",
        apis.ResetCircuitBreakersView.as_view(),
        name="performance-reset-circuit-breakers",
    ),
]
