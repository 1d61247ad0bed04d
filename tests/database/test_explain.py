"""EXPLAIN runs in a read-only transaction that is always rolled back, under
a statement timeout, one statement at a time."""

from collections.abc import Iterator

import pytest
from django.db import connection
from django.test import Client

from apps.database import selectors
from apps.database.models import StatementText
from apps.database.services import ExplainError, explain_run, snapshot_take
from tests.database.helpers import execute, postgres_only, require_statements

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ledger() -> Iterator[None]:
    postgres_only()
    execute("CREATE TABLE perfhub_ledger (id integer, amount integer)")
    execute("INSERT INTO perfhub_ledger SELECT g, g FROM generate_series(1, 100) g")
    yield
    execute("DROP TABLE IF EXISTS perfhub_ledger")
    execute("DROP TABLE IF EXISTS perfhub_victim")


def _rows() -> int:
    return int(execute("SELECT count(*) FROM perfhub_ledger")[0][0])


@pytest.mark.usefixtures("ledger")
def test_plain_explain_does_not_run_the_statement() -> None:
    result = explain_run(sql="DELETE FROM perfhub_ledger", timeout_ms=1000)

    assert result.mode == "plain"
    assert "Delete on perfhub_ledger" in result.plan
    assert _rows() == 100


@pytest.mark.usefixtures("ledger")
def test_explain_analyze_of_a_write_is_refused_and_leaves_no_trace() -> None:
    with pytest.raises(ExplainError, match="read-only transaction"):
        explain_run(sql="DELETE FROM perfhub_ledger", analyze=True, timeout_ms=1000)
    with pytest.raises(ExplainError, match="read-only transaction"):
        explain_run(
            sql="WITH gone AS (DELETE FROM perfhub_ledger RETURNING *) SELECT count(*) FROM gone",
            analyze=True,
            timeout_ms=1000,
        )

    assert _rows() == 100


@pytest.mark.usefixtures("ledger")
def test_explain_analyze_of_a_read_runs_it() -> None:
    result = explain_run(sql="SELECT sum(amount) FROM perfhub_ledger", analyze=True, timeout_ms=1000)

    assert result.mode == "analyze"
    assert "actual time=" in result.plan
    assert "Execution Time" in result.plan


@pytest.mark.usefixtures("ledger")
def test_the_statement_timeout_gives_a_clear_error() -> None:
    with pytest.raises(ExplainError, match="longer than the 200 ms statement timeout"):
        explain_run(sql="SELECT pg_sleep(3)", analyze=True, timeout_ms=200)
    # The connection is usable afterwards, with the timeout gone.
    assert execute("SELECT current_setting('statement_timeout')") == [("0",)]


@pytest.mark.usefixtures("ledger")
def test_a_second_statement_cannot_slip_out_of_the_read_only_transaction() -> None:
    with pytest.raises(ExplainError, match="exactly one statement"):
        explain_run(sql="SELECT 1; COMMIT; DROP TABLE perfhub_ledger", timeout_ms=1000)
    with pytest.raises(ExplainError, match="cannot be explained"):
        explain_run(sql="DROP TABLE perfhub_ledger", timeout_ms=1000)

    assert _rows() == 100


@pytest.mark.usefixtures("ledger")
def test_ddl_hidden_in_a_function_call_cannot_run() -> None:
    execute("CREATE TABLE perfhub_victim (a integer)")
    execute(
        "CREATE FUNCTION pg_temp.perfhub_drop() RETURNS integer LANGUAGE sql AS"
        " $$ DROP TABLE perfhub_victim; SELECT 1 $$"
    )
    with pytest.raises(ExplainError):
        explain_run(sql="SELECT pg_temp.perfhub_drop()", analyze=True, timeout_ms=1000)

    assert execute("SELECT to_regclass('perfhub_victim') IS NOT NULL") == [(True,)]


@pytest.mark.usefixtures("ledger")
def test_a_normalised_statement_from_the_slow_list_gets_a_generic_plan() -> None:
    require_statements()
    for n in range(3):
        execute("SELECT amount FROM perfhub_ledger WHERE id = %s", [n])
    snapshot = snapshot_take()
    assert snapshot is not None
    [queryid] = StatementText.objects.filter(query__contains="FROM perfhub_ledger WHERE id = $1").values_list(
        "queryid", flat=True
    )

    result = explain_run(queryid=queryid, timeout_ms=1000)

    assert result.mode == "generic"
    assert "Seq Scan on perfhub_ledger" in result.plan
    assert "$1" in result.plan  # the parameter stayed unbound, not folded to NULL
    # The prepared statement does not outlive the call on the pooled connection.
    assert execute("SELECT count(*) FROM pg_prepared_statements") == [(0,)]
    with pytest.raises(ExplainError, match="cannot be run with ANALYZE"):
        explain_run(queryid=queryid, analyze=True, timeout_ms=1000)


def test_an_unknown_queryid_is_a_clear_error() -> None:
    postgres_only()
    with pytest.raises(ExplainError, match="No statement with queryid 12345"):
        explain_run(queryid=12345, timeout_ms=1000)


@pytest.mark.usefixtures("ledger")
def test_the_explain_view_for_an_admin(owner_client: Client) -> None:
    ok = owner_client.post("/database/explain/", {"sql": "SELECT * FROM perfhub_ledger", "timeout_ms": "1000"})
    refused = owner_client.post(
        "/database/explain/",
        {"sql": "DELETE FROM perfhub_ledger", "analyze": "on", "timeout_ms": "1000"},
        HTTP_HX_REQUEST="true",
    )
    empty = owner_client.post("/database/explain/", {"timeout_ms": "1000"})

    assert ok.status_code == 200
    assert "Seq Scan on perfhub_ledger" in ok.content.decode()
    assert refused.status_code == 400
    assert "read-only transaction" in refused.content.decode()
    assert "<html" not in refused.content.decode()  # the htmx fragment only
    assert empty.status_code == 400
    assert "Give either a statement" in empty.content.decode()
    assert _rows() == 100


def test_the_slow_query_list_offers_explain_to_admins_only(owner_client: Client, viewer_client: Client) -> None:
    postgres_only()
    window = selectors.WINDOWS["5m"].key
    snapshot_take()
    execute("SELECT 1 AS perfhub_explain_button")
    snapshot_take()

    owner_page = owner_client.get(f"/database/?panel=slow_queries&window={window}", HTTP_HX_REQUEST="true")
    viewer_page = viewer_client.get(f"/database/?panel=slow_queries&window={window}", HTTP_HX_REQUEST="true")

    if not selectors.slow_queries(window=selectors.WINDOWS["5m"])["available"]:
        pytest.skip("pg_stat_statements is not available")
    assert 'name="queryid"' in owner_page.content.decode()
    assert 'name="queryid"' not in viewer_page.content.decode()


def test_a_placeholder_of_unknown_type_is_explained_or_said_why_not() -> None:
    postgres_only()
    if connection.pg_version >= 160000:  # type: ignore[attr-defined]
        assert explain_run(sql="SELECT 1 WHERE $1 IS NULL", timeout_ms=1000).mode == "generic"
        return
    with pytest.raises(ExplainError, match="cannot infer the type of every \\$n placeholder"):
        explain_run(sql="SELECT 1 WHERE $1 IS NULL", timeout_ms=1000)
    assert execute("SELECT count(*) FROM pg_prepared_statements") == [(0,)]
