"""The resilience page, under /resilience/; the API is in
apps.resilience.urls, under /api/v1/performance/."""

from django.urls import path

from apps.resilience import views

app_name = "resilience"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("breakers/<slug:name>/reset/", views.breaker_reset, name="breaker-reset"),
]
