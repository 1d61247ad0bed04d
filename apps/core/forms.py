from django import forms

from apps.core.models import ApiToken


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="What the token is for, e.g. “Prometheus scrape” or “Grafana”.",
    )
    scope = forms.ChoiceField(
        choices=ApiToken.Scope.choices,
        initial=ApiToken.Scope.READ,
        help_text="Read: every GET endpoint. Admin: also backups and breaker resets.",
    )

    def __init__(self, *args: object, may_grant_admin: bool, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if not may_grant_admin:
            self.fields["scope"].choices = [(ApiToken.Scope.READ, "Read")]  # type: ignore[attr-defined]
            self.fields["scope"].help_text = "Read: every GET endpoint. Only administrators can create admin tokens."
