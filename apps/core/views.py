from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.core.forms import ApiTokenForm
from apps.core.permissions import StaffRequest, staff_required
from apps.core.selectors import api_tokens_visible_to
from apps.core.services import api_token_create, api_token_revoke

TOKENS_PER_PAGE = 50


@staff_required
@require_GET
def overview(request: StaffRequest) -> HttpResponse:
    return render(request, "core/overview.html")


# The secret of a token just created waits here for the one GET that shows it.
SHOW_ONCE_SESSION_KEY = "core:tokens:show-once"


@staff_required
@require_http_methods(["GET", "POST"])
def tokens(request: StaffRequest) -> HttpResponse:
    may_grant_admin = request.user.is_superuser
    form = ApiTokenForm(request.POST if request.method == "POST" else None, may_grant_admin=may_grant_admin)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            _, secret = api_token_create(
                user=request.user, name=form.cleaned_data["name"], scope=form.cleaned_data["scope"]
            )
            # Post/Redirect/Get: reloading the page must not send the form
            # again and create a second token. The session is server-side,
            # and the secret leaves it on the GET that shows it.
            request.session[SHOW_ONCE_SESSION_KEY] = secret
            return redirect("core:tokens")
        status = 400
    new_secret = request.session.pop(SHOW_ONCE_SESSION_KEY, None) if request.method == "GET" else None
    page = Paginator(api_tokens_visible_to(user=request.user), TOKENS_PER_PAGE).get_page(request.GET.get("page"))
    context = {"form": form, "page": page, "new_secret": new_secret}
    return render(request, "core/tokens.html", context, status=status)


@staff_required
@require_POST
def token_revoke(request: StaffRequest, token_id: int) -> HttpResponse:
    token = get_object_or_404(api_tokens_visible_to(user=request.user), pk=token_id)
    api_token_revoke(token=token)
    messages.success(request, f"Token “{token.name}” revoked.")
    return redirect("core:tokens")
