"""The cache statistics page, under /cache/."""

from django.urls import path

from apps.cache import views

app_name = "cache"

urlpatterns = [
    path("", views.overview, name="overview"),
]
