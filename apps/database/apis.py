from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.cache.response_cache import cache_response
from apps.core.permissions import IsStaffOrReadToken
from apps.database.selectors import DEFAULT_WINDOW, WINDOWS, database_stats, window_get


class DatabaseStatsQuerySerializer(serializers.Serializer):
    window = serializers.ChoiceField(
        choices=list(WINDOWS), default=DEFAULT_WINDOW, help_text="Window of the slow-query ranking."
    )
    limit = serializers.IntegerField(
        min_value=1, max_value=500, default=50, help_text="How many slow queries to return."
    )


_SECTION = serializers.JSONField


DatabaseStatsSerializer = inline_serializer(
    "DatabaseStats",
    fields={
        "server": _SECTION(help_text="vendor (postgresql or sqlite), version, database name."),
        "connections": _SECTION(required=False, help_text="Client connections by state and application."),
        "pool": _SECTION(help_text="This process's psycopg pool: size, in_use, waiting; configured=false: no pool."),
        "cache_hit_ratios": _SECTION(required=False, help_text="Buffer cache hit ratios of tables and indexes."),
        "slow_queries": _SECTION(
            required=False,
            help_text="pg_stat_statements over the window, from snapshot deltas: calls, total and mean time, rows, "
            "share of total; enable_steps when the extension is missing.",
        ),
        "index_advice": _SECTION(required=False, help_text="Unused, duplicate, invalid and missing indexes."),
        "sizes": _SECTION(required=False, help_text="Table and index sizes with growth since a day ago."),
        "vacuum": _SECTION(required=False, help_text="Dead rows, (auto)vacuum and analyze times, wraparound margin."),
        "long_running": _SECTION(required=False, help_text="Long-running and blocked queries."),
        "sequences": _SECTION(required=False, help_text="Sequences by share of their range used."),
        "sqlite": _SECTION(required=False, help_text="On SQLite: file, pages, freelist, tables and indexes."),
        "postgresql_only": serializers.ListField(
            child=serializers.CharField(), required=False, help_text="On SQLite: the sections it cannot fill."
        ),
    },
)


class DatabaseStatsView(APIView):
    """Database statistics, pghero-style on PostgreSQL and a subset on SQLite."""

    permission_classes = [IsStaffOrReadToken]

    @extend_schema(
        summary="Database statistics",
        parameters=[DatabaseStatsQuerySerializer],
        responses={200: DatabaseStatsSerializer},
    )
    @cache_response
    def get(self, request: Request) -> Response:
        query = DatabaseStatsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        stats = database_stats(window=window_get(query.validated_data["window"]), limit=query.validated_data["limit"])
        return Response(stats)
