"""The Sites pages (/vitals/sites/), the Site admin, and the snippet on
PerfHub's own pages."""

import html
import json
import re
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.db import DatabaseError
from django.test import Client
from pytest_django.fixtures import DjangoAssertNumQueries

from apps.vitals.collect import forget_cached_sites
from apps.vitals.forms import normalize_origin
from apps.vitals.models import BUILTIN_SITE, Metric, Rollup, RouteRule, Site
from apps.vitals.selectors import rum_snippet_forget
from apps.vitals.services import site_create
from tests.helpers import PASSWORD
from tests.vitals.helpers import CHROME_DESKTOP, ORIGIN, beacon, lcp

pytestmark = pytest.mark.django_db

SITES = "/vitals/sites/"
HASHED = r"[0-9a-f]{12}"
WEB_VITALS_URL = rf"http://testserver/static/vendor/web-vitals/web-vitals-6\.2\.3\.attribution\.iife\.{HASHED}\.js"
RUM_URL = rf"http://testserver/static/perfhub/rum\.{HASHED}\.js"


@pytest.fixture(autouse=True)
def _fresh_site_cache() -> None:
    # The beacon endpoint keeps each key's site for 30 s per process.
    forget_cached_sites()


@pytest.fixture
def shop() -> Site:
    return site_create(
        name="shop",
        allowed_origins=[ORIGIN],
        sample_rate=0.5,
        route_rules=[(r"^/products/\d+$", "/products/:id"), (r"^/cart", "/cart")],
    )


def builtin() -> Site:
    return Site.objects.get(name=BUILTIN_SITE)


def form_data(**overrides: str) -> dict[str, str]:
    data = {
        "name": "blog",
        "allowed_origins": "https://blog.example.com\nhttp://localhost:8000",
        "sample_rate": "0.25",
        "retention_days": "90",
        "kept_query_params": "q\npage",
        "route_rules": "^/posts/[\\w-]+$ => /posts/:slug\n^/tags/ => /tags/:tag",
    }
    data.update(overrides)
    return data


def collect(client: Client, key: str) -> int:
    """The beacon endpoint's status for one LCP beacon sent with ``key``."""
    response = client.generic(
        "POST",
        f"/api/v1/vitals/collect?key={key}",
        data=json.dumps(beacon(lcp())),
        content_type="text/plain",
        HTTP_ORIGIN=ORIGIN,
        HTTP_USER_AGENT=CHROME_DESKTOP,
    )
    return int(response.status_code)


def field_errors(response: Any, field: str) -> list[str]:
    return list(response.context["form"].errors.get(field, []))


# --- Reading ----------------------------------------------------------------


def test_staff_see_every_site_read_only(viewer_client: Client, shop: Site) -> None:
    response = viewer_client.get(SITES)
    assert response.status_code == 200
    page = response.content.decode()
    assert '<a href="/vitals/sites/shop/">shop</a>' in page
    assert '<a href="/vitals/sites/perfhub/">perfhub</a>' in page
    assert "<code>https://shop.example.com</code>" in page
    assert "PerfHub’s own origin" in page
    rows = {site.name: site for site in response.context["page"].object_list}
    assert rows["shop"].route_rule_count == 2
    assert rows["perfhub"].route_rule_count == 0
    # No create form for staff who are not administrators.
    assert response.context["form"] is None
    assert 'name="allowed_origins"' not in page
    assert "Only administrators can add sites." in page


def test_administrators_get_the_create_form(owner_client: Client) -> None:
    page = owner_client.get(SITES).content.decode()
    for field in ("name", "allowed_origins", "sample_rate", "retention_days", "kept_query_params", "route_rules"):
        assert f'name="{field}"' in page
    assert 'name="csrfmiddlewaretoken"' in page


def test_the_vitals_overview_leads_to_a_dashboard_and_is_in_the_navigation(viewer_client: Client) -> None:
    # Without data anywhere, the built-in site's dashboard (tests/vitals/test_pages.py has the rest).
    response = viewer_client.get("/vitals/")
    assert (response.status_code, response["Location"]) == (302, f"/vitals/s/{BUILTIN_SITE}/")
    page = viewer_client.get(SITES).content.decode()
    assert '<a href="/vitals/" aria-current="page">Vitals</a>' in page


def test_a_site_page_shows_its_settings_rules_and_snippet(viewer_client: Client, shop: Site) -> None:
    response = viewer_client.get("/vitals/sites/shop/")
    assert response.status_code == 200
    page = response.content.decode()
    assert shop.public_key in page
    assert page.index("<code>^/products/\\d+$</code>") < page.index("<code>^/cart</code>")
    assert "<code>/products/:id</code>" in page
    # The snippet is shown as text in <pre><code>, never as live tags.
    code = re.search(r'<pre><code id="snippet">(.*?)</code></pre>', page, flags=re.S)
    assert code is not None
    snippet = html.unescape(code[1])
    assert re.fullmatch(
        rf'<script src="{WEB_VITALS_URL}" defer></script>\n'
        rf'<script src="{RUM_URL}" data-perfhub-key="{re.escape(shop.public_key)}" '
        r'data-perfhub-sample-rate="0\.5" defer></script>',
        snippet,
    ), snippet
    for attribute in ("data-perfhub-release", "data-perfhub-route", "window.perfhubRoute", "data-perfhub-endpoint"):
        assert f"<code>{attribute}</code>" in page
    # Staff who are not administrators get neither the rotate button nor the edit form.
    assert "Rotate key" not in page
    assert response.context["form"] is None


def test_an_unknown_site_is_a_404(viewer_client: Client, owner_client: Client) -> None:
    assert viewer_client.get("/vitals/sites/nope/").status_code == 404
    assert owner_client.post("/vitals/sites/nope/rotate-key/").status_code == 404


def test_the_sites_list_is_paginated(viewer_client: Client) -> None:
    Site.objects.bulk_create(Site(name=f"site-{n:03d}", allowed_origins=["*"]) for n in range(60))
    first = viewer_client.get(SITES)
    assert len(first.context["page"].object_list) == 50
    assert "Page 1 of 2" in first.content.decode()
    assert 'href="?page=2"' in first.content.decode()
    second = viewer_client.get(SITES + "?page=2")
    names = [site.name for site in second.context["page"].object_list]
    # 61 sites in name order: the built-in "perfhub" sorts before "site-…".
    assert names == [f"site-{n:03d}" for n in range(49, 60)]
    assert viewer_client.get(SITES + "?page=99").context["page"].number == 2


def test_the_sites_list_runs_a_bounded_number_of_queries(
    viewer_client: Client, django_assert_max_num_queries: DjangoAssertNumQueries
) -> None:
    for n in range(40):
        site_create(
            name=f"site-{n}", allowed_origins=[f"https://s{n}.example.com"], route_rules=[("^/a", "/a"), ("^/b", "/b")]
        )
    # The user, the count, one page of sites with their rule counts, and the
    # built-in site for PerfHub's own snippet (cache cold): none per site.
    with django_assert_max_num_queries(4):
        assert viewer_client.get(SITES).status_code == 200


def test_a_site_page_runs_a_bounded_number_of_queries(
    owner_client: Client, django_assert_max_num_queries: DjangoAssertNumQueries
) -> None:
    site_create(name="big", allowed_origins=["*"], route_rules=[(f"^/p{n}/", f"/p{n}") for n in range(50)])
    # The user, the site, its rules, the built-in site for the snippet.
    with django_assert_max_num_queries(4):
        assert owner_client.get("/vitals/sites/big/").status_code == 200


# --- Creating -----------------------------------------------------------------


def test_an_administrator_creates_a_site_and_is_redirected_to_its_snippet(owner_client: Client) -> None:
    response = owner_client.post(SITES, form_data(), follow=True)
    # Post/Redirect/Get: a reload cannot create the site twice.
    assert response.redirect_chain == [("/vitals/sites/blog/", 302)]
    assert "Site “blog” created." in response.content.decode()
    site = Site.objects.get(name="blog")
    assert site.allowed_origins == ["https://blog.example.com", "http://localhost:8000"]
    assert (site.sample_rate, site.retention_days) == (0.25, 90)
    assert site.kept_query_params == ["q", "page"]
    assert list(RouteRule.objects.filter(site=site).values_list("position", "pattern", "route")) == [
        (0, r"^/posts/[\w-]+$", "/posts/:slug"),
        (1, "^/tags/", "/tags/:tag"),
    ]
    assert not site.is_builtin
    assert site.public_key in response.content.decode()


def test_staff_who_are_not_administrators_cannot_create_sites(viewer_client: Client) -> None:
    assert viewer_client.post(SITES, form_data()).status_code == 403
    assert not Site.objects.filter(name="blog").exists()


def test_each_bad_origin_is_reported_with_its_line(owner_client: Client) -> None:
    origins = "\n".join(
        [
            "https://ok.example.com",
            "shop.example.com",
            "https://shop.example.com/checkout",
            "ftp://files.example.com",
            "",
            "https://shop.example.com:99999",
        ]
    )
    response = owner_client.post(SITES, form_data(allowed_origins=origins))
    assert response.status_code == 400
    errors = field_errors(response, "allowed_origins")
    assert [error.split(":")[0] for error in errors] == ["Line 2", "Line 3", "Line 4", "Line 6"]
    assert "“shop.example.com” is not an origin: write it as scheme://host[:port]" in errors[0]
    assert "no path" in errors[1]
    assert "http or https" in errors[2]
    assert "port" in errors[3]
    # The form comes back with what was typed, and nothing is saved.
    assert "ftp://files.example.com" in response.content.decode()
    assert not Site.objects.filter(name="blog").exists()


def test_origins_are_required_for_a_site(owner_client: Client) -> None:
    response = owner_client.post(SITES, form_data(allowed_origins="\n  \n"))
    assert response.status_code == 400
    assert field_errors(response, "allowed_origins") == ["This field is required."]


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("*", "*"),
        ("https://Shop.Example.com", "https://shop.example.com"),
        ("HTTPS://shop.example.com:443/", "https://shop.example.com"),
        ("http://localhost:8000", "http://localhost:8000"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
    ],
)
def test_origins_are_stored_as_browsers_send_them(typed: str, stored: str) -> None:
    # The beacon endpoint compares the Origin header as a string.
    assert normalize_origin(typed) == stored


@pytest.mark.parametrize(
    "typed",
    ["https://", "https://a b.example", "https://user@shop.example.com", "https://shop.example.com?x=1", "**"],
)
def test_things_that_are_not_origins_are_refused(typed: str) -> None:
    with pytest.raises(ValueError):
        normalize_origin(typed)


def test_each_bad_route_rule_is_reported_with_its_line(owner_client: Client) -> None:
    rules = "\n".join(
        [
            r"^/products/\d+$ => /products/:id",
            r"^/products/(\d+ => /products/:id",
            "^/about",
            ".* => /everything",
            "^/search => search",
            "^/x => /x?y",
        ]
    )
    response = owner_client.post(SITES, form_data(route_rules=rules))
    assert response.status_code == 400
    errors = field_errors(response, "route_rules")
    assert [error.split(":")[0] for error in errors] == ["Line 2", "Line 3", "Line 4", "Line 5", "Line 6"]
    assert "Not a valid regular expression" in errors[0]
    assert "pattern => route" in errors[1]
    assert "matches an empty string" in errors[2]
    assert "must start with '/'" in errors[3]
    assert "'?'" in errors[4]
    assert not Site.objects.filter(name="blog").exists()
    assert not RouteRule.objects.exists()


def test_a_pattern_longer_than_the_column_is_refused(owner_client: Client) -> None:
    response = owner_client.post(SITES, form_data(route_rules="^/" + "a" * 400 + " => /a"))
    assert response.status_code == 400
    assert "at most 300 characters" in field_errors(response, "route_rules")[0]


def test_other_bad_values_are_refused_by_field(owner_client: Client, shop: Site) -> None:
    response = owner_client.post(
        SITES,
        form_data(name="shop", sample_rate="0", retention_days="401", kept_query_params="ok\nwith space"),
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert errors["name"] == ["A site with this name already exists."]
    assert "sample_rate" in errors and "retention_days" in errors
    assert errors["kept_query_params"][0].startswith("Line 2: ")
    assert Site.objects.count() == 2


# --- Editing ------------------------------------------------------------------


def test_an_administrator_edits_a_site_and_its_rules_are_replaced_in_order(owner_client: Client, shop: Site) -> None:
    page = owner_client.get("/vitals/sites/shop/").content.decode()
    # The edit form starts from the stored settings.
    assert "^/products/\\d+$ =&gt; /products/:id\n^/cart =&gt; /cart" in page
    response = owner_client.post(
        "/vitals/sites/shop/",
        form_data(name="store", route_rules="^/basket => /cart\n^/products/\\d+$ => /products/:id"),
        follow=True,
    )
    assert response.redirect_chain == [("/vitals/sites/store/", 302)]
    assert "Site “store” saved." in response.content.decode()
    shop.refresh_from_db()
    assert shop.name == "store"
    assert shop.allowed_origins == ["https://blog.example.com", "http://localhost:8000"]
    assert list(shop.route_rules.values_list("position", "pattern", "route")) == [
        (0, "^/basket", "/cart"),
        (1, r"^/products/\d+$", "/products/:id"),
    ]


def test_a_bad_edit_changes_nothing(owner_client: Client, shop: Site) -> None:
    before = list(shop.route_rules.values_list("pattern", "route"))
    response = owner_client.post("/vitals/sites/shop/", form_data(route_rules="^/ok => /ok\n(( => /bad"))
    assert response.status_code == 400
    assert field_errors(response, "route_rules")[0].startswith("Line 2: Not a valid regular expression")
    shop.refresh_from_db()
    assert shop.name == "shop" and shop.sample_rate == 0.5
    assert list(shop.route_rules.values_list("pattern", "route")) == before


def test_staff_who_are_not_administrators_cannot_edit_or_rotate(viewer_client: Client, shop: Site) -> None:
    key = shop.public_key
    assert viewer_client.post("/vitals/sites/shop/", form_data(name="shop")).status_code == 403
    assert viewer_client.post("/vitals/sites/shop/rotate-key/").status_code == 403
    shop.refresh_from_db()
    assert (shop.public_key, shop.sample_rate, shop.route_rules.count()) == (key, 0.5, 2)


def test_rotating_the_key_is_a_post(owner_client: Client, shop: Site) -> None:
    assert owner_client.get("/vitals/sites/shop/rotate-key/").status_code == 405


def test_rotating_the_key_turns_the_old_key_away_at_the_beacon_endpoint(
    owner_client: Client, client: Client, shop: Site
) -> None:
    old = shop.public_key
    assert collect(client, old) == 202
    page = owner_client.get("/vitals/sites/shop/").content.decode()
    assert "Pages that still carry the old key stop reporting within 30 seconds" in page

    response = owner_client.post("/vitals/sites/shop/rotate-key/", follow=True)
    assert response.redirect_chain == [("/vitals/sites/shop/", 302)]
    shop.refresh_from_db()
    assert shop.public_key != old
    assert "New key for “shop”." in response.content.decode()
    assert shop.public_key in response.content.decode()

    forget_cached_sites()  # what 30 seconds do in every process
    assert collect(client, old) == 403
    assert collect(client, shop.public_key) == 202


# --- The built-in site ----------------------------------------------------------


def test_the_builtin_site_cannot_be_renamed_and_has_no_origins_field(owner_client: Client) -> None:
    page = owner_client.get("/vitals/sites/perfhub/").content.decode()
    assert 'name="allowed_origins"' not in page
    assert "PerfHub’s own origin (implicit): <code>http://testserver</code>" in page
    assert re.search(r'<input[^>]*name="name"[^>]*disabled', page)

    data = form_data(name="renamed", sample_rate="0.5", route_rules="")
    response = owner_client.post("/vitals/sites/perfhub/", data, follow=True)
    assert response.redirect_chain == [("/vitals/sites/perfhub/", 302)]
    site = builtin()
    assert (site.name, site.sample_rate, site.retention_days) == (BUILTIN_SITE, 0.5, 90)
    assert site.allowed_origins == []
    assert site.is_builtin
    assert not Site.objects.filter(name="renamed").exists()


def test_the_builtin_site_cannot_be_deleted_in_the_admin(owner_client: Client, shop: Site) -> None:
    site = builtin()
    assert owner_client.get(f"/admin/vitals/site/{site.pk}/delete/").status_code == 403
    selected = {"action": "delete_selected", "_selected_action": [site.pk, shop.pk]}
    confirmation = owner_client.post("/admin/vitals/site/", selected).content.decode()
    assert "<title>Cannot delete sites" in confirmation
    # Confirming anyway is refused.
    assert owner_client.post("/admin/vitals/site/", {**selected, "post": "yes"}).status_code == 403
    assert Site.objects.filter(pk__in=[site.pk, shop.pk]).count() == 2


def test_the_admin_delete_page_counts_related_rows_instead_of_listing_them(owner_client: Client, shop: Site) -> None:
    response = owner_client.get(f"/admin/vitals/site/{shop.pk}/delete/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Route rules: 2" in page and "Rollups: 0" in page
    response = owner_client.post(f"/admin/vitals/site/{shop.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Site.objects.filter(pk=shop.pk).exists()


# --- The admin --------------------------------------------------------------------


def test_metrics_and_rollups_stay_out_of_the_admin() -> None:
    assert admin.site.is_registered(Site)
    assert not admin.site.is_registered(Metric)
    assert not admin.site.is_registered(Rollup)


def test_the_admin_rotates_keys_for_those_who_may_change_sites(owner_client: Client, shop: Site) -> None:
    old = shop.public_key
    response = owner_client.post(
        "/admin/vitals/site/", {"action": "rotate_public_key", "_selected_action": [shop.pk]}, follow=True
    )
    assert response.status_code == 200
    assert "New public key for shop." in response.content.decode()
    shop.refresh_from_db()
    assert shop.public_key != old


def test_the_rotate_action_needs_the_change_permission(client: Client, shop: Site) -> None:
    reader = User.objects.create_user("reader", password=PASSWORD, is_staff=True)
    reader.user_permissions.add(Permission.objects.get(codename="view_site"))
    client.force_login(reader)
    page = client.get("/admin/vitals/site/").content.decode()
    assert "shop" in page
    assert "rotate_public_key" not in page
    old = shop.public_key
    client.post("/admin/vitals/site/", {"action": "rotate_public_key", "_selected_action": [shop.pk]})
    shop.refresh_from_db()
    assert shop.public_key == old


def test_the_admin_checks_origins_and_route_rules(owner_client: Client, shop: Site) -> None:
    data = {
        "name": "shop",
        "allowed_origins": "https://shop.example.com\nshop.example.org",
        "sample_rate": "1",
        "retention_days": "30",
        "kept_query_params": "",
        "route_rules-TOTAL_FORMS": "1",
        "route_rules-INITIAL_FORMS": "0",
        "route_rules-MIN_NUM_FORMS": "0",
        "route_rules-MAX_NUM_FORMS": "1000",
        "route_rules-0-position": "5",
        "route_rules-0-pattern": ".*",
        "route_rules-0-route": "/all",
    }
    response = owner_client.post(f"/admin/vitals/site/{shop.pk}/change/", data)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Line 2: “shop.example.org” is not an origin" in page
    assert "matches an empty string" in page
    shop.refresh_from_db()
    assert shop.allowed_origins == [ORIGIN]


# --- PerfHub's own snippet -----------------------------------------------------


def test_perfhubs_own_pages_carry_the_snippet_of_the_builtin_site(owner_client: Client) -> None:
    site = builtin()
    page = owner_client.get("/").content.decode()
    head = page.split("</head>")[0]
    assert re.search(
        rf'<script src="/static/vendor/web-vitals/web-vitals-6\.2\.3\.attribution\.iife\.{HASHED}\.js"', head
    )
    tag = re.search(rf'<script src="/static/perfhub/rum\.{HASHED}\.js"([^>]*)>', head)
    assert tag is not None
    assert f'data-perfhub-key="{site.public_key}"' in tag[1]
    assert 'data-perfhub-sample-rate="1.0"' in tag[1]
    assert 'data-perfhub-route="/"' in tag[1]
    # The route is Django's, so every site's page counts under one route.
    detail = owner_client.get("/vitals/sites/perfhub/").content.decode()
    assert 'data-perfhub-route="/vitals/sites/:name/"' in detail
    # The login page carries it too.
    assert f'data-perfhub-key="{site.public_key}"' in Client().get("/login/").content.decode()


def test_the_snippet_follows_a_key_rotation_of_the_builtin_site_at_once(owner_client: Client) -> None:
    old = builtin().public_key
    assert f'data-perfhub-key="{old}"' in owner_client.get("/").content.decode()
    owner_client.post("/vitals/sites/perfhub/rotate-key/")
    new = builtin().public_key
    assert new != old
    page = owner_client.get("/").content.decode()
    assert f'data-perfhub-key="{new}"' in page and old not in page


def test_the_snippet_is_cached(owner_client: Client) -> None:
    old = builtin().public_key
    owner_client.get("/")
    # Changed behind PerfHub's back: the cached key stays until forgotten.
    Site.objects.filter(is_builtin=True).update(public_key="changed-directly")
    assert f'data-perfhub-key="{old}"' in owner_client.get("/").content.decode()
    rum_snippet_forget()
    assert 'data-perfhub-key="changed-directly"' in owner_client.get("/").content.decode()


def test_without_the_builtin_site_pages_render_without_the_snippet(owner_client: Client) -> None:
    Site.objects.filter(is_builtin=True).delete()
    response = owner_client.get("/")
    assert response.status_code == 200
    assert "data-perfhub-key" not in response.content.decode()
    assert "rum." not in response.content.decode()


def test_a_database_error_leaves_the_snippet_out(owner_client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    owner_client.get("/tokens/")  # session and user cached before the database "fails"
    rum_snippet_forget()

    def broken(*args: object, **kwargs: object) -> None:
        raise DatabaseError("connection refused")

    monkeypatch.setattr("apps.vitals.selectors.Site.objects.filter", broken)
    response = owner_client.get("/")
    assert response.status_code == 200
    assert "data-perfhub-key" not in response.content.decode()
