"""The cache statistics API, under /api/v1/; the page is in apps.cache.urls_html."""

from django.urls import path

from apps.cache.apis import CacheStatsView

urlpatterns = [
    path("performance/cache/stats", CacheStatsView.as_view(), name="performance-cache-stats"),
]
