import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.core.models import ApiToken
from tests.helpers import bearer

WHOAMI = "/api/v1/whoami"


def test_staff_create_a_token_whose_secret_is_shown_once_and_stored_hashed(viewer_client: Client) -> None:
    response = viewer_client.post("/tokens/", {"name": "Prometheus scrape", "scope": "read"}, follow=True)
    # Post/Redirect/Get, so a reload cannot create a second token.
    assert response.redirect_chain == [("/tokens/", 302)]
    secret = response.context["new_secret"]
    assert secret.startswith("phk_") and len(secret) > 40
    assert secret in response.content.decode()

    token = ApiToken.objects.get()
    assert token.digest == ApiToken.digest_of(secret)
    assert secret not in {token.digest, token.hint, token.name}
    assert token.scope == "read"

    # Shown once: the next visit no longer has it.
    listing = viewer_client.get("/tokens/")
    assert listing.status_code == 200
    assert listing.context["new_secret"] is None
    assert secret not in listing.content.decode()
    assert "Prometheus scrape" in listing.content.decode()


def test_a_token_authenticates_api_calls(read_token: str, viewer: User) -> None:
    response = Client().get(WHOAMI, headers=bearer(read_token))
    assert response.status_code == 200
    assert response.json()["username"] == viewer.username
    assert response.json()["token"] == {"name": "read", "scope": "read"}
    assert ApiToken.objects.get().last_used_at is not None


def test_the_token_keyword_is_accepted_too(read_token: str) -> None:
    assert Client().get(WHOAMI, HTTP_AUTHORIZATION=f"Token {read_token}").status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer a b",
        "Bearer phk_not-a-real-token",
        "Bearer not-even-prefixed",
        "Bearer \u00e9\u00e9\u00e9",
    ],
)
@pytest.mark.django_db
def test_bad_authorization_headers_get_401_not_500(header: str) -> None:
    response = Client().get(WHOAMI, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "detail" in response.json()


@pytest.mark.django_db
def test_anonymous_api_calls_get_401_with_a_challenge() -> None:
    response = Client().get(WHOAMI)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_a_revoked_token_stops_working(viewer_client: Client, read_token: str) -> None:
    token = ApiToken.objects.get()
    response = viewer_client.post(f"/tokens/{token.pk}/revoke/")
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert Client().get(WHOAMI, headers=bearer(read_token)).status_code == 401


def test_a_token_stops_working_when_its_owner_loses_staff(read_token: str, viewer: User) -> None:
    viewer.is_staff = False
    viewer.save()
    assert Client().get(WHOAMI, headers=bearer(read_token)).status_code == 401


def test_only_administrators_may_create_admin_tokens(viewer_client: Client, owner_client: Client) -> None:
    refused = viewer_client.post("/tokens/", {"name": "sneaky", "scope": "admin"})
    assert refused.status_code == 400
    assert "scope" in refused.context["form"].errors
    assert not ApiToken.objects.exists()

    granted = owner_client.post("/tokens/", {"name": "backups", "scope": "admin"})
    assert granted.status_code == 302
    assert ApiToken.objects.get().scope == "admin"


@pytest.mark.parametrize("data", [{}, {"name": "", "scope": "read"}, {"name": "x" * 101, "scope": "read"}])
def test_invalid_token_forms_get_400_with_errors(viewer_client: Client, data: dict[str, str]) -> None:
    response = viewer_client.post("/tokens/", data)
    assert response.status_code == 400
    assert response.context["form"].errors
    assert not ApiToken.objects.exists()


def test_staff_cannot_revoke_someone_elses_token(viewer_client: Client, admin_token: str) -> None:
    token = ApiToken.objects.get()
    assert viewer_client.post(f"/tokens/{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_administrators_see_every_token_staff_only_their_own(
    owner_client: Client, viewer_client: Client, read_token: str, admin_token: str
) -> None:
    assert len(owner_client.get("/tokens/").context["page"].object_list) == 2
    assert [t.name for t in viewer_client.get("/tokens/").context["page"].object_list] == ["read"]


def test_token_creation_requires_a_csrf_token(viewer: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer)
    assert client.post("/tokens/", {"name": "x", "scope": "read"}).status_code == 403
    assert not ApiToken.objects.exists()


def test_the_admin_lists_and_revokes_tokens_but_cannot_create_them(owner_client: Client, read_token: str) -> None:
    token = ApiToken.objects.get()
    assert owner_client.get("/admin/core/apitoken/").status_code == 200
    assert owner_client.get("/admin/core/apitoken/add/").status_code == 403
    response = owner_client.post(
        "/admin/core/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}, follow=True
    )
    assert response.status_code == 200
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_token_page_queries_are_bounded(owner_client: Client, owner: User, django_assert_max_num_queries) -> None:
    for i in range(30):
        owner_client.post("/tokens/", {"name": f"t{i}", "scope": "read"})
    owner_client.get("/tokens/")  # warms the cached site key of PerfHub's own snippet
    with django_assert_max_num_queries(6):
        assert owner_client.get("/tokens/").status_code == 200
