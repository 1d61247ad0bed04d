"""The database page, under /database/; the stats API is in
apps.database.urls_api, under /api/v1/."""

from django.urls import path

from apps.database import views

app_name = "database"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("explain/", views.explain, name="explain"),
    path("integrity-check/", views.integrity_check, name="integrity-check"),
]
