from collections.abc import Callable
from functools import cache

from django.http import HttpRequest, HttpResponse
from django.urls import ResolverMatch, get_script_prefix, resolve, reverse

from apps.vitals.collect import collect


class BeaconMiddleware:
    """Answers the beacon endpoint without the middleware below it.

    Under gunicorn, beacons are answered before Django (apps.vitals.wsgi);
    they come here under Django's own servers (runserver, the test client)
    and when that path leaves them to Django (tracing on, the HTTPS
    redirect). The rest of the stack does nothing for them: no session,
    user, CSRF token (the view is exempt), message, template or static
    file. Going through it cost a sixth of a beacon's time
    (bench/ingest.py). The request is still counted and logged by the
    instrumentation above this middleware, and SecurityMiddleware (HTTPS
    redirect, security headers) runs first; the host is validated here, as
    CommonMiddleware would."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info != _collect_path():
            return self.get_response(request)
        request.get_host()  # DisallowedHost (400) for a host off ALLOWED_HOSTS
        # As URL resolution would set it: the instrumentation names the view.
        request.resolver_match = _collect_match()
        return collect(request)


@cache
def _collect_path() -> str:
    # As request.path_info has it: without the script prefix that reverse
    # adds when PerfHub is served under a sub-path.
    return "/" + reverse("vitals-collect").removeprefix(get_script_prefix())


@cache
def _collect_match() -> ResolverMatch:
    return resolve(_collect_path())
