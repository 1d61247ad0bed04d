"""PerfHub's own pages about real-user monitoring, under /vitals/; the
beacon endpoint and the API are in apps.vitals.urls, under /api/v1/.

Dashboards live under /vitals/s/<site>/ so that no site name can clash
with /vitals/sites/."""

from django.urls import path

from apps.vitals import views

app_name = "vitals"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("sites/", views.sites, name="sites"),
    path("sites/<slug:name>/", views.site_detail, name="site"),
    path("sites/<slug:name>/rotate-key/", views.site_rotate_key, name="site-rotate-key"),
    path("s/<slug:site>/", views.dashboard, name="dashboard"),
    path("s/<slug:site>/metric/<str:name>/", views.metric_detail, name="metric"),
    path("s/<slug:site>/compare/", views.compare, name="compare"),
    path("s/<slug:site>/attribution/", views.attribution, name="attribution"),
]
