"""Every URL pattern is closed to anonymous and non-staff visitors unless it
is on the short public list. The patterns are enumerated from the resolver,
so a page added later cannot forget its access check."""

import re
from collections.abc import Iterator

import pytest
from django.http.response import HttpResponseBase
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

# name (with namespace) -> why it is public
PUBLIC = {
    "login": "the login page",
    "logout": "logging out an anonymous visitor just redirects to login",
    "admin:login": "the admin's own login page",
    "admin:logout": "logging out an anonymous visitor is harmless",
    "api-docs": "only the page shell; the schema it loads needs authentication",
    "vitals-collect": "the beacon endpoint: browsers post with the site's public key, no login",
}
# Answered by ProbeMiddleware before URL resolution; listed for completeness.
PROBES = ("/livez", "/readyz")

# Values for the named groups of regex patterns; a new group name fails the
# test until it is added here.
REGEX_GROUPS = {"app_label": "auth", "url": "no-such-page/"}
_CONVERTER = re.compile(r"<(?:\w+:)?\w+>")
_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def _concrete(pattern: str) -> str:
    path = _CONVERTER.sub("1", pattern)

    def group_value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in REGEX_GROUPS:
            raise AssertionError(f"add a sample value for the URL group {name!r} to REGEX_GROUPS")
        return REGEX_GROUPS[name]

    path = _GROUP.sub(group_value, path)
    return "/" + path.replace("^", "").replace("$", "")


def _patterns(
    patterns: list[URLPattern | URLResolver], prefix: str = "", namespace: str = ""
) -> Iterator[tuple[str, str]]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            ns = entry.namespace or namespace
            yield from _patterns(entry.url_patterns, prefix + str(entry.pattern), ns)
        else:
            name = f"{namespace}:{entry.name}" if namespace and entry.name else (entry.name or "")
            yield _concrete(prefix + str(entry.pattern)), name


ALL_URLS = sorted(set(_patterns(get_resolver().url_patterns)))
PROTECTED = [(path, name) for path, name in ALL_URLS if name not in PUBLIC]


def test_the_enumeration_sees_the_known_pages() -> None:
    paths = {path for path, _ in ALL_URLS}
    assert {"/", "/tokens/", "/api/v1/performance/metrics", "/admin/"} <= paths
    assert len(PROTECTED) > 20


def _is_login_redirect(response: HttpResponseBase) -> bool:
    return response.status_code == 302 and response["Location"].split("?")[0] in {"/login/", "/admin/login/"}


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize(("path", "name"), PROTECTED)
def test_anonymous_visitors_are_turned_away(path: str, name: str, method: str) -> None:
    response = getattr(Client(), method)(path)
    if path.startswith("/api/"):
        assert response.status_code in {401, 403}, f"{method.upper()} {path} ({name}) gave {response.status_code}"
    else:
        assert _is_login_redirect(response), f"{method.upper()} {path} ({name}) gave {response.status_code}"


@pytest.mark.parametrize(("path", "name"), PROTECTED)
def test_signed_in_non_staff_users_are_turned_away(outsider_client: Client, path: str, name: str) -> None:
    response = outsider_client.get(path)
    # The admin sends non-staff users to its login page; PerfHub's own pages
    # and the API answer 403.
    assert response.status_code == 403 or _is_login_redirect(response), (
        f"GET {path} ({name}) gave {response.status_code}"
    )


@pytest.mark.django_db
@pytest.mark.parametrize("path", PROBES)
def test_probes_are_public(path: str) -> None:
    assert Client().get(path).status_code == 200
