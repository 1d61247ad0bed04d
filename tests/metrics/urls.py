"""Test URLconf: PerfHub's own URLs plus views with known SQL patterns."""

from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path


def nplusone(request: HttpRequest) -> JsonResponse:
    # The classic N+1: one query for the users, then one per user for its groups.
    groups = {user.username: list(user.groups.values_list("name", flat=True)) for user in User.objects.order_by("pk")}
    return JsonResponse({"users": len(groups)})


def duplicates(request: HttpRequest) -> JsonResponse:
    # The same statement with the same (secret-looking) parameter, three times.
    found = [User.objects.filter(username="s3cret-value").exists() for _ in range(3)]
    return JsonResponse({"found": any(found)})


def failing(request: HttpRequest) -> HttpResponse:
    return HttpResponse("unavailable", status=503)


def raising(request: HttpRequest) -> HttpResponse:
    raise LookupError("a bug in a view")


urlpatterns = [
    path("test/nplusone/", nplusone, name="test-nplusone"),
    path("test/duplicates/", duplicates, name="test-duplicates"),
    path("test/failing/", failing, name="test-failing"),
    path("test/raising/", raising, name="test-raising"),
    path("", include("perfhub.urls")),
]
