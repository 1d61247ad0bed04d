from django.http import HttpRequest

from apps.core.navigation import nav_items


def navigation(request: HttpRequest) -> dict[str, object]:
    return {"nav_items": nav_items(request.path)}
