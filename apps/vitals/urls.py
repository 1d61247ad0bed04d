from django.urls import path

from apps.vitals import collect

urlpatterns = [
    path("vitals/collect", collect.collect, name="vitals-collect"),
]
