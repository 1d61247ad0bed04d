import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

STAFF_PAGES = ["/", "/tokens/", "/api/v1/docs/", "/admin/"]


@pytest.mark.parametrize("path", STAFF_PAGES)
def test_staff_pages_render_under_a_strict_csp_with_no_inline_script(owner_client: Client, path: str) -> None:
    response = owner_client.get(path)
    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    html = response.content.decode()
    # Every executable <script> loads a file; JSON data blocks are inert.
    for attrs, body in re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S):
        assert "src=" in attrs or 'type="application/json"' in attrs or not body.strip(), (path, attrs, body[:80])
    assert " on" + "click=" not in html and "style=" not in html.replace("stylesheet", "")


@pytest.mark.django_db
def test_the_login_page_is_public_and_posts_with_csrf(client: Client) -> None:
    response = client.get("/login/")
    assert response.status_code == 200
    assert 'name="csrfmiddlewaretoken"' in response.content.decode()


def test_the_navigation_links_what_exists_and_marks_the_rest(owner_client: Client) -> None:
    html = owner_client.get("/").content.decode()
    assert '<a href="/" aria-current="page">Overview</a>' in html
    assert '<a href="/tokens/">API tokens</a>' in html
    assert '<a href="/admin/">Admin</a>' in html
    # Parts not built yet are plain text, not links to a 404.
    assert '<span class="nav-soon"' in html


def test_htmx_sends_the_csrf_token_from_the_body(owner_client: Client) -> None:
    html = owner_client.get("/").content.decode()
    assert re.search(r"""<body hx-headers='\{"X-CSRFToken": "\w+"\}'>""", html)


def test_static_files_have_hashed_names(owner_client: Client) -> None:
    html = owner_client.get("/").content.decode()
    assert re.search(r"/static/vendor/htmx/htmx-2\.0\.11\.min\.[0-9a-f]{12}\.js", html)
    assert re.search(r"/static/perfhub/perfhub\.[0-9a-f]{12}\.css", html)


def test_logging_in_with_the_form_reaches_the_overview(client: Client, owner: User) -> None:
    from tests.helpers import PASSWORD

    response = client.post("/login/", {"username": "owner", "password": PASSWORD, "next": "/"}, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == "/"
    assert b"<h1>Overview</h1>" in response.content


@pytest.mark.django_db
def test_a_wrong_password_gets_a_clear_error(client: Client, owner: User) -> None:
    response = client.post("/login/", {"username": "owner", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
