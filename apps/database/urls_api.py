from django.urls import path

from apps.database.apis import DatabaseStatsView

urlpatterns = [
    path("performance/database/stats", DatabaseStatsView.as_view(), name="performance-database-stats"),
]
