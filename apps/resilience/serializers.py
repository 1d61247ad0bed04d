from rest_framework import serializers


class CheckSerializer(serializers.Serializer):
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=["ok", "degraded", "down", "skipped"])
    latency_ms = serializers.FloatField()
    message = serializers.CharField()


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded", "down"])
    checks = CheckSerializer(many=True)


class BreakerConfigSerializer(serializers.Serializer):
    failure_rate = serializers.FloatField(help_text="Opens when this share of calls in the window failed.")
    slow_rate = serializers.FloatField(help_text="Opens when this share of calls in the window was slow.")
    slow_seconds = serializers.FloatField()
    minimum_calls = serializers.IntegerField()
    window_seconds = serializers.FloatField()
    reset_timeout = serializers.FloatField()
    half_open_trials = serializers.IntegerField()


class BreakerSerializer(serializers.Serializer):
    name = serializers.CharField()
    state = serializers.ChoiceField(choices=["closed", "open", "half-open"])
    failure_rate = serializers.FloatField(help_text="Failed calls / calls over the sliding window.")
    slow_call_rate = serializers.FloatField(source="slow_rate")
    calls = serializers.IntegerField(source="window.calls")
    failures = serializers.IntegerField(source="window.failures")
    slow_calls = serializers.IntegerField(source="window.slow")
    last_change = serializers.DateTimeField(source="changed_at", allow_null=True)
    last_change_reason = serializers.CharField(source="reason")
    config = BreakerConfigSerializer()


class DegradationModeSerializer(serializers.Serializer):
    name = serializers.CharField()
    title = serializers.CharField()
    active = serializers.BooleanField()
    since = serializers.DateTimeField(allow_null=True)
    reason = serializers.CharField()
    effect = serializers.CharField()
    breakers = serializers.ListField(child=serializers.CharField())


class ResilienceSerializer(serializers.Serializer):
    breakers = BreakerSerializer(many=True)
    degradation_modes = DegradationModeSerializer(many=True, source="modes")


class ResetInputSerializer(serializers.Serializer):
    breakers = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        allow_empty=True,
        help_text="Names of the breakers to close; all when omitted or empty.",
    )


class ResetOutputSerializer(serializers.Serializer):
    reset = serializers.ListField(child=serializers.CharField())
    breakers = BreakerSerializer(many=True)
