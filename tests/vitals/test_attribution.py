"""Attribution rollups: culprits ranked by impact, phase means, re-reports
replacing their attribution, and the rebuild giving the same rows."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apps.core.timeranges import time_range_preset
from apps.vitals.attribution import attribution_parts
from apps.vitals.filters import DashboardQuery
from apps.vitals.models import AttributionRollup, Site
from apps.vitals.selectors import attribution_top
from apps.vitals.services import metrics_store, rollups_rebuild
from tests.vitals.test_store import record

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HERO = "main > img.hero"
LOGO = "header > img.logo"


@pytest.fixture
def site() -> Site:
    return Site.objects.create(name="shop", allowed_origins=["*"])


def lcp(
    site: Site, n: int, value: float, target: str, *, route: str = "/", weight: float = 1.0, **phases: float
) -> dict[str, Any]:
    attribution = {"target": target, "url": f"https://cdn.example.com/{target.split('.')[-1]}.jpg", **phases}
    return record(
        site, n, value=value, at=NOW - timedelta(hours=n % 30), route=route, weight=weight, attribution=attribution
    )


def state(site: Site) -> list[tuple[Any, ...]]:
    return sorted(
        AttributionRollup.objects.filter(site=site).values_list(
            "bucket_seconds", "bucket_start", "name", "route", "kind", "key", "samples", "weight", "excess_sum"
        )
    )


def query(site: Site, route: str | None = None) -> DashboardQuery:
    return DashboardQuery(site=site, time_range=time_range_preset("7d", now=NOW), route=route)


def test_culprits_are_ranked_by_impact_not_by_count(site: Site) -> None:
    # Ten page views of the logo, each 100 ms over "good" (2500 ms); two of
    # the hero, each 2000 ms over: the hero explains more of the trouble.
    records = [lcp(site, n, 2600.0, LOGO, resourceLoadDelay=50.0) for n in range(1, 11)]
    records += [lcp(site, n, 4500.0, HERO, resourceLoadDelay=300.0, elementRenderDelay=100.0) for n in (11, 12)]
    metrics_store(records=records, now=NOW)
    rows = [r for r in attribution_top(query(site), name="LCP") if r.kind == "element"]
    assert [r.key for r in rows] == [HERO, LOGO]
    hero, logo = rows
    assert (hero.samples, hero.weight, hero.impact) == (2, 2.0, pytest.approx(4000.0))
    assert (logo.samples, logo.impact) == (10, pytest.approx(1000.0))
    phases = {p.phase: p.mean for p in hero.phases}
    assert phases["resourceLoadDelay"] == pytest.approx(300.0)
    assert phases["elementRenderDelay"] == pytest.approx(100.0)
    assert phases["timeToFirstByte"] is None, "a phase nobody reported has no mean"
    assert {r.kind for r in attribution_top(query(site), name="LCP")} == {"element", "resource"}


def test_sampled_page_views_weigh_more(site: Site) -> None:
    metrics_store(records=[lcp(site, 1, 3500.0, HERO, weight=4.0), lcp(site, 2, 4500.0, LOGO)], now=NOW)
    rows = [r for r in attribution_top(query(site), name="LCP") if r.kind == "element"]
    # Hero: 4 page views × 1000 ms over; logo: 1 × 2000 ms.
    assert [(r.key, r.impact) for r in rows] == [(HERO, pytest.approx(4000.0)), (LOGO, pytest.approx(2000.0))]


def test_the_route_narrows_the_culprits(site: Site) -> None:
    metrics_store(records=[lcp(site, 1, 3000.0, HERO, route="/"), lcp(site, 2, 3000.0, LOGO, route="/cart")], now=NOW)
    assert {r.key for r in attribution_top(query(site, "/cart"), name="LCP") if r.kind == "element"} == {LOGO}


def test_inp_cls_and_server_timing(site: Site) -> None:
    inp = record(
        site,
        1,
        value=600.0,
        name="INP",
        at=NOW,
        attribution={
            "interactionTarget": "button#buy",
            "inputDelay": 40.0,
            "processingDuration": 500.0,
            "presentationDelay": 60.0,
            "longestScriptURL": "https://shop.example.com/app.js",
            "longestScriptDuration": 450.0,
        },
    )
    cls = record(
        site, 2, value=0.3, name="CLS", at=NOW, attribution={"largestShiftTarget": "div.ad", "largestShiftValue": 0.3}
    )
    ttfb = record(
        site,
        3,
        value=900.0,
        name="TTFB",
        at=NOW,
        attribution={"serverTiming": {"db": 120.0, "cache": 3.0, "app": 40.0}, "waitingDuration": 5.0},
    )
    metrics_store(records=[inp, cls, ttfb], now=NOW)
    inp_rows = {r.kind: r for r in attribution_top(query(site), name="INP")}
    assert inp_rows["target"].key == "button#buy"
    assert inp_rows["script"].key == "https://shop.example.com/app.js"
    assert {p.phase: p.mean for p in inp_rows["target"].phases}["processingDuration"] == pytest.approx(500.0)
    assert [r.key for r in attribution_top(query(site), name="CLS")] == ["div.ad"]
    server = next(r for r in attribution_top(query(site), name="TTFB") if r.kind == "server")
    assert {p.phase: p.mean for p in server.phases} == {"db": 120.0, "cache": 3.0, "app": 40.0}


def test_a_re_report_replaces_its_attribution_and_the_rebuild_agrees(site: Site) -> None:
    first = lcp(site, 1, 3000.0, HERO)
    metrics_store(records=[first, lcp(site, 2, 2000.0, LOGO)], now=NOW)
    metrics_store(records=[{**first, "value": 5000.0, "attribution": {"target": LOGO}}], now=NOW)
    rows = {r.key: r for r in attribution_top(query(site), name="LCP") if r.kind == "element"}
    assert set(rows) == {LOGO}, "the hero's block rows left when its only metric moved"
    assert rows[LOGO].samples == 2
    incremental = state(site)
    rollups_rebuild(site=site, since=NOW - timedelta(days=2), until=NOW, now=NOW)
    assert state(site) == incremental


def test_attribution_parts_ignore_junk() -> None:
    assert list(attribution_parts("LCP", {"target": 7, "resourceLoadDelay": "slow"})) == []
    assert list(attribution_parts("TTFB", {"serverTiming": {"db": True}})) == []
    assert list(attribution_parts("FCP", {"timeToFirstByte": 100})) == [("phases", "", {"timeToFirstByte": 100.0})]
