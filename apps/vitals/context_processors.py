from django.http import HttpRequest

from apps.vitals.normalize import _readable_django_route
from apps.vitals.selectors import rum_snippet_builtin


def rum_snippet(request: HttpRequest) -> dict[str, object]:
    """What base.html needs to carry the RUM snippet of the built-in site:
    its key and sample rate, and the page's Django route (``/vitals/sites/:name/``)
    so that every site's detail page counts under one route."""
    snippet = rum_snippet_builtin()
    if snippet is None:
        return {}
    match = request.resolver_match
    # No match on 404 pages: the server then names the route from the path.
    route = _readable_django_route(match.route) if match is not None else ""
    return {"perfhub_rum": snippet, "perfhub_route": route}
