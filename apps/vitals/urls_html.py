"""PerfHub's own pages about real-user monitoring, under /vitals/; the
beacon endpoint and the API are in apps.vitals.urls, under /api/v1/."""

from django.urls import path

from apps.vitals import views

app_name = "vitals"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("sites/", views.sites, name="sites"),
    path("sites/<slug:name>/", views.site_detail, name="site"),
    path("sites/<slug:name>/rotate-key/", views.site_rotate_key, name="site-rotate-key"),
]
