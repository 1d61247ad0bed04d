from typing import Any

from django import forms

from apps.database.services import EXPLAIN_TIMEOUT_MS_DEFAULT, EXPLAIN_TIMEOUT_MS_MAX


class ExplainForm(forms.Form):
    queryid = forms.IntegerField(required=False, widget=forms.HiddenInput)
    sql = forms.CharField(
        required=False,
        label="SQL",
        max_length=100_000,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text="One statement. It runs in a read-only transaction that is always rolled back.",
    )
    analyze = forms.BooleanField(
        required=False,
        label="ANALYZE (really run it, with timings and buffers)",
    )
    timeout_ms = forms.IntegerField(
        label="Statement timeout (ms)",
        min_value=100,
        max_value=EXPLAIN_TIMEOUT_MS_MAX,
        initial=EXPLAIN_TIMEOUT_MS_DEFAULT,
        required=False,
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if (data.get("queryid") is None) == (not data.get("sql", "").strip()):
            raise forms.ValidationError("Give either a statement or a query from the slow-query list, not both.")
        if data.get("timeout_ms") is None:
            data["timeout_ms"] = EXPLAIN_TIMEOUT_MS_DEFAULT
        return data
