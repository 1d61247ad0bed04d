"""Who may do what.

HTML pages are for staff; API reads take a staff session or a token of any
scope; API writes and admin actions take an administrator (a superuser) or an
admin-scope token belonging to one.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from apps.core.models import ApiToken


class StaffRequest(HttpRequest):
    """The request a ``staff_required`` view receives: its user is signed in."""

    user: User


def staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Anonymous visitors go to the login page; signed-in users who are not
    staff get a plain 403 rather than a login loop."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not (request.user.is_active and request.user.is_staff):
            raise PermissionDenied("PerfHub's pages are for staff users.")
        return view(request, *args, **kwargs)

    wrapper.perfhub_access = "staff"  # type: ignore[attr-defined]
    return wrapper


def _token(request: Request) -> ApiToken | None:
    return request.auth if isinstance(request.auth, ApiToken) else None


class IsStaffOrReadToken(BasePermission):
    message = "A staff session or an API token is required."

    def has_permission(self, request: Request, view: Any) -> bool:
        if _token(request) is not None:
            return True
        user = request.user
        return bool(user and user.is_authenticated and user.is_active and user.is_staff)


class IsAdminOrAdminToken(BasePermission):
    message = "An administrator or an admin-scope API token is required."

    def has_permission(self, request: Request, view: Any) -> bool:
        token = _token(request)
        if token is not None:
            return token.scope == ApiToken.Scope.ADMIN and token.user.is_superuser
        user = request.user
        return bool(user and user.is_authenticated and user.is_active and user.is_superuser)
