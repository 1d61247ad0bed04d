"""The beacon endpoint and the Web Vitals API, under /api/v1/."""

from django.urls import path

from apps.vitals import apis, collect

urlpatterns = [
    path("vitals/collect", collect.collect, name="vitals-collect"),
    path("sites/", apis.SiteListView.as_view(), name="api-sites"),
    path("sites/<slug:site>/summary", apis.SummaryView.as_view(), name="api-site-summary"),
    path("sites/<slug:site>/routes", apis.RoutesView.as_view(), name="api-site-routes"),
    path("sites/<slug:site>/series", apis.SeriesView.as_view(), name="api-site-series"),
    path("sites/<slug:site>/histogram", apis.HistogramView.as_view(), name="api-site-histogram"),
    path("sites/<slug:site>/breakdown", apis.BreakdownView.as_view(), name="api-site-breakdown"),
    path("sites/<slug:site>/attribution", apis.AttributionView.as_view(), name="api-site-attribution"),
    path("sites/<slug:site>/compare", apis.CompareView.as_view(), name="api-site-compare"),
    path("sites/<slug:site>/export", apis.ExportView.as_view(), name="api-site-export"),
]
