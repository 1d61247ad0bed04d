from dataclasses import asdict

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.cache.response_cache import cache_response
from apps.cache.selectors import DEFAULT_WINDOW, WINDOWS, cache_stats
from apps.core.permissions import IsStaffOrReadToken


class CacheStatsQuerySerializer(serializers.Serializer):
    window = serializers.ChoiceField(choices=list(WINDOWS), default=DEFAULT_WINDOW, required=False)


class KeyspaceSerializer(serializers.Serializer):
    db = serializers.IntegerField()
    keys = serializers.IntegerField()
    expires = serializers.IntegerField()


class RedisStatsSerializer(serializers.Serializer):
    version = serializers.CharField()
    uptime_seconds = serializers.IntegerField()
    window_start = serializers.DateTimeField(help_text="Start of the period the windowed figures cover.")
    covered_seconds = serializers.FloatField(help_text="Seconds the windowed figures cover (0: none yet).")
    collecting = serializers.BooleanField(
        help_text="True while no INFO snapshot a full window old exists yet: the figures cover covered_seconds."
    )
    hits = serializers.IntegerField(allow_null=True, help_text="keyspace_hits over the window")
    misses = serializers.IntegerField(allow_null=True, help_text="keyspace_misses over the window")
    hit_rate = serializers.FloatField(allow_null=True)
    evicted_keys = serializers.IntegerField(allow_null=True)
    expired_keys = serializers.IntegerField(allow_null=True)
    commands = serializers.IntegerField(allow_null=True, help_text="total_commands_processed over the window")
    ops_per_second = serializers.FloatField(allow_null=True)
    memory_used_bytes = serializers.IntegerField()
    memory_peak_bytes = serializers.IntegerField()
    memory_max_bytes = serializers.IntegerField(help_text="maxmemory; 0 means no limit")
    eviction_policy = serializers.CharField()
    connected_clients = serializers.IntegerField()
    keyspace = KeyspaceSerializer(many=True)


class LocalMemorySerializer(serializers.Serializer):
    entries = serializers.IntegerField()
    max_entries = serializers.IntegerField()
    note = serializers.CharField()


class PrefixCountSerializer(serializers.Serializer):
    backend = serializers.CharField()
    prefix = serializers.CharField(help_text="Key up to its second ':'; unknown prefixes count as 'other'.")
    hits = serializers.IntegerField()
    misses = serializers.IntegerField()
    # Output only: the field shadows Serializer.errors, which is never used here.
    errors = serializers.IntegerField()  # type: ignore[assignment]
    hit_rate = serializers.FloatField(allow_null=True)


class CacheStatsSerializer(serializers.Serializer):
    backend = serializers.CharField(help_text="redis or locmem")
    window = serializers.CharField()
    window_seconds = serializers.IntegerField()
    generated_at = serializers.DateTimeField()
    redis = RedisStatsSerializer(allow_null=True, help_text="Server statistics; null on the local-memory cache.")
    redis_error = serializers.CharField(allow_null=True)
    local_memory = LocalMemorySerializer(allow_null=True)
    prefixes = PrefixCountSerializer(
        many=True, help_text="PerfHub's own lookups (get, get_many per key) since the server started."
    )
    notes = serializers.ListField(child=serializers.CharField())


class CacheStatsView(APIView):
    """Cache statistics: Redis INFO over a window, PerfHub's own per-prefix
    hits and misses, the local-memory cache's size."""

    permission_classes = [IsStaffOrReadToken]

    @extend_schema(
        summary="Cache statistics",
        parameters=[
            OpenApiParameter(
                "window", str, enum=list(WINDOWS), default=DEFAULT_WINDOW, description="Window of the Redis rates."
            )
        ],
        responses={
            200: CacheStatsSerializer,
            304: OpenApiResponse(description="Not modified: the ETag sent in If-None-Match is still current."),
            400: OpenApiResponse(description='An unknown window: a JSON error naming the field, `{"window": ["…"]}`.'),
        },
        description="Hit rate, evictions, expirations and ops/s from deltas of Redis INFO snapshots over the "
        "window; memory, clients and keys per database now; PerfHub's own hits, misses and errors per key prefix. "
        "Answers are cached for PERFHUB_STATS_CACHE_SECONDS with an ETag: send If-None-Match to get 304.",
    )
    @cache_response
    def get(self, request: Request) -> Response:
        query = CacheStatsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        stats = cache_stats(window=query.validated_data["window"])
        return Response(CacheStatsSerializer(asdict(stats)).data)
