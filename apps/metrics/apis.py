from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.permissions import IsStaffOrReadToken
from apps.metrics.selectors import ops_panels


class ViewRowSerializer(serializers.Serializer):
    view = serializers.CharField()
    requests = serializers.FloatField(help_text="Requests in the window (Prometheus: rate × window).")
    rate = serializers.FloatField(allow_null=True, help_text="Requests per second; null on the first local reading.")
    errors_4xx = serializers.FloatField()
    errors_5xx = serializers.FloatField()
    p50_ms = serializers.FloatField(allow_null=True, help_text="Interpolated within histogram buckets.")
    p95_ms = serializers.FloatField(allow_null=True)
    p99_ms = serializers.FloatField(allow_null=True)
    db_ms = serializers.FloatField(allow_null=True, help_text="Mean SQL time per request.")
    cache_ms = serializers.FloatField(allow_null=True, help_text="Mean cache time per request.")


class OpsOverviewSerializer(serializers.Serializer):
    source = serializers.ChoiceField(choices=["local", "prometheus"])  # type: ignore[assignment]
    source_label = serializers.CharField()
    window_seconds = serializers.FloatField(allow_null=True)
    rows = ViewRowSerializer(many=True)
    in_flight = serializers.FloatField(allow_null=True)
    workers = serializers.IntegerField(allow_null=True)
    replicas = serializers.IntegerField(allow_null=True, help_text="Prometheus only: instances scraped.")
    error = serializers.CharField(allow_null=True, help_text="Why the source could not be read, if it could not.")


class ViewInsightSerializer(serializers.Serializer):
    view = serializers.CharField()
    sampled = serializers.IntegerField()
    queries = serializers.IntegerField()
    max_queries = serializers.IntegerField()
    mean_queries = serializers.FloatField()
    duplicates = serializers.IntegerField()
    duplicate_sql = serializers.CharField(help_text="SQL with placeholders; parameter values are never stored.")
    duplicate_count = serializers.IntegerField()
    nplusone = serializers.IntegerField()
    nplusone_sql = serializers.CharField()
    nplusone_count = serializers.IntegerField()
    last_seen = serializers.DateTimeField()


class QueryInsightSerializer(serializers.Serializer):
    sample_rate = serializers.FloatField()
    nplusone_threshold = serializers.IntegerField()
    views = ViewInsightSerializer(many=True)
    error = serializers.CharField(allow_null=True)


class OpsResponseSerializer(serializers.Serializer):
    overview = OpsOverviewSerializer()
    query_insight = QueryInsightSerializer()


class OpsOverviewApi(APIView):
    """The ops page's panels as JSON: requests, errors and latency per view
    from this host's registry (or PROMETHEUS_URL), and query insight."""

    permission_classes = [IsStaffOrReadToken]

    @extend_schema(summary="Ops overview", responses={200: OpsResponseSerializer})
    def get(self, request: Request) -> Response:
        response = Response(OpsResponseSerializer(ops_panels()).data)
        response["Cache-Control"] = "no-store"
        return response
