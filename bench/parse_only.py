"""The baseline of bench/ingest.py: the least Django can do with a beacon.

A settings module and its URLconf in one: PerfHub's own settings (so the
same DEBUG, hosts, logging and installed apps), but no middleware at all and
one view at the beacon endpoint's path that reads the body, decodes it with
json.loads and answers 202, touching no database, cache or Redis. Served
like PerfHub itself, by perfhub.wsgi under perfhub/gunicorn_conf.py; only
the settings module differs:

    DJANGO_SETTINGS_MODULE=bench.parse_only .venv/bin/gunicorn -c perfhub/gunicorn_conf.py perfhub.wsgi

The answer has the real endpoint's shape, {"accepted": n, "rejected": 0}, so
that the bench's wrk script counts both servers' answers the same way.
"""

import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

# Every setting of PerfHub's; the two below are the baseline's.
from perfhub.settings import *  # noqa: F403

MIDDLEWARE = []
ROOT_URLCONF = "bench.parse_only"


def collect(request: HttpRequest) -> HttpResponse:
    data = json.loads(request.body)
    metrics = data.get("metrics") if isinstance(data, dict) else None
    return JsonResponse({"accepted": len(metrics) if isinstance(metrics, list) else 0, "rejected": 0}, status=202)


urlpatterns = [path("api/v1/vitals/collect", collect)]
