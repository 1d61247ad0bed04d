"""The Site form of PerfHub's pages, and the line-per-item fields the admin
shares with it.

Every list (origins, query parameters, route rules) is a textarea with one
item per line; an invalid line is reported with its line number, so a long
paste can be fixed without guessing which entry was wrong.
"""

import re
from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator

from apps.vitals.models import RouteRule, Site
from apps.vitals.normalize import validate_route, validate_route_pattern

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Every beacon without a declared route tries a site's rules in order.
MAX_ROUTE_RULES = 200
MAX_ORIGINS = 100
MAX_QUERY_PARAMS = 50
# RouteRule.pattern is a varchar(300) on PostgreSQL, shorter than the 500
# characters validate_route_pattern allows.
MAX_PATTERN_LENGTH = RouteRule._meta.get_field("pattern").max_length or 300
RULE_SEPARATOR = "=>"
_PARAM_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f&=#?]")


def _lines(value: str) -> list[tuple[int, str]]:
    """The non-blank lines of ``value``, stripped, with their 1-based numbers."""
    return [(number, line.strip()) for number, line in enumerate(value.splitlines(), start=1) if line.strip()]


def normalize_origin(text: str) -> str:
    """``text`` as a browser serialises it in the Origin header, which is
    what the beacon endpoint compares: lower-case scheme and host, no
    default port, international names in their ASCII (punycode) form. A
    trailing ``/`` is forgiven. Raises ``ValueError`` with the reason.
    """
    if text == "*":
        return text
    if any(char.isspace() for char in text):
        raise ValueError("an origin cannot contain spaces")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if not scheme or not parts.netloc:
        raise ValueError("write it as scheme://host[:port], e.g. https://shop.example.com")
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"the scheme must be http or https, not {scheme}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError("an origin has no path, query or fragment; keep only scheme://host[:port]")
    if parts.username is not None or "@" in parts.netloc:
        raise ValueError("an origin has no user name or password")
    host = parts.hostname or ""
    if not host:
        raise ValueError("the host is missing")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535")
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal; urlsplit removed the brackets
    else:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("the host is not a valid domain name") from None
        if not re.fullmatch(r"[a-z0-9.-]+", host) or ".." in host or host.startswith((".", "-")):
            raise ValueError("the host is not a valid domain name")
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class LinesField(forms.CharField):
    """A textarea whose cleaned value is a list: one item per non-blank line,
    each checked by ``clean_line``; errors name their line."""

    widget = forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "autocapitalize": "off"})
    max_lines = 100
    what = "line"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return "\n".join(self.format_item(item) for item in value)
        return value

    def format_item(self, item: Any) -> str:
        return str(item)

    def to_python(self, value: Any) -> list[Any]:  # type: ignore[override]
        # A disabled field cleans its initial value, which is already a list.
        text = str((self.prepare_value(value) if isinstance(value, list | tuple) else super().to_python(value)) or "")
        if "\x00" in text:
            # PostgreSQL refuses NUL in text and JSON columns.
            raise ValidationError("Null characters are not allowed.", code="null_characters_not_allowed")
        lines = _lines(text)
        if len(lines) > self.max_lines:
            raise ValidationError(f"At most {self.max_lines} {self.what}s; this has {len(lines)}.", code="max_lines")
        items: list[Any] = []
        errors: list[ValidationError] = []
        for number, line in lines:
            try:
                item = self.clean_line(line)
            except ValueError as exc:
                errors.append(ValidationError(f"Line {number}: {exc}", code="invalid_line"))
                continue
            if item not in items:
                items.append(item)
        if errors:
            raise ValidationError(errors)
        return items

    def validate(self, value: Any) -> None:
        if self.required and not value:
            raise ValidationError(self.error_messages["required"], code="required")

    def clean_line(self, line: str) -> Any:
        return line


class OriginsField(LinesField):
    max_lines = MAX_ORIGINS
    what = "origin"

    def clean_line(self, line: str) -> str:
        try:
            return normalize_origin(line)
        except ValueError as exc:
            raise ValueError(f"“{line[:100]}” is not an origin: {exc}.") from None


class QueryParamsField(LinesField):
    max_lines = MAX_QUERY_PARAMS
    what = "parameter"

    def clean_line(self, line: str) -> str:
        if len(line) > 100:
            raise ValueError("a parameter name can have at most 100 characters.")
        bad = _PARAM_FORBIDDEN.search(line)
        if bad:
            raise ValueError(f"“{line[:100]}” is not a parameter name: it contains {bad[0]!r}.")
        return line


class RouteRulesField(LinesField):
    max_lines = MAX_ROUTE_RULES
    what = "rule"

    def format_item(self, item: Any) -> str:
        pattern, route = item
        return f"{pattern} {RULE_SEPARATOR} {route}"

    def clean_line(self, line: str) -> tuple[str, str]:
        # The last "=>": a route starts with "/" and never needs one, while a
        # regular expression might.
        pattern, separator, route = line.rpartition(RULE_SEPARATOR)
        pattern, route = pattern.strip(), route.strip()
        if not separator or not pattern or not route:
            raise ValueError(
                rf"write each rule as pattern {RULE_SEPARATOR} route, e.g. ^/products/\d+$ => /products/:id"
            )
        if len(pattern) > MAX_PATTERN_LENGTH:
            raise ValueError(
                f"a route pattern can have at most {MAX_PATTERN_LENGTH} characters; this one has {len(pattern)}."
            )
        try:
            validate_route_pattern(pattern)
            validate_route(route)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        return pattern, route


class SiteForm(forms.Form):
    """Create or edit a site. For the built-in site the name is fixed and
    the origins field is absent: its origin is PerfHub's own."""

    name = forms.SlugField(
        max_length=50,
        help_text="Letters, digits, hyphens and underscores; used in URLs and the API.",
    )
    allowed_origins = OriginsField(
        required=True,
        label="Allowed origins",
        help_text="One per line, as scheme://host[:port] with no path, e.g. https://shop.example.com. "
        "Only pages from these origins may send beacons. A line with just * accepts any origin.",
    )
    sample_rate = forms.FloatField(
        initial=1.0,
        validators=[MinValueValidator(0.0001), MaxValueValidator(1.0)],
        widget=forms.NumberInput(attrs={"step": "any", "min": "0.0001", "max": "1"}),
        help_text="Share of page views that report, from 0.0001 to 1. It is written into the snippet: "
        "after changing it, update the snippet on your pages.",
    )
    retention_days = forms.IntegerField(
        initial=30,
        min_value=1,
        max_value=400,
        label="Retention (days)",
        help_text="How long raw metrics are kept, 1 to 400 days; rollups are kept regardless.",
    )
    kept_query_params = QueryParamsField(
        label="Kept query parameters",
        help_text="One name per line. Stored page URLs keep only these query parameters; all others are "
        "stripped, as they can carry e-mail addresses and tokens.",
    )
    route_rules = RouteRulesField(
        label="Route rules",
        help_text=r"One per line: pattern => route, e.g. ^/products/\d+$ => /products/:id. Patterns are "
        "Python regular expressions searched in the page's path; the first rule that matches names the route. "
        "Pages without a match get ids collapsed automatically (/products/42 → /products/:id).",
    )

    def __init__(self, *args: Any, site: Site | None = None, **kwargs: Any) -> None:
        self.site = site
        if site is not None and "initial" not in kwargs:
            kwargs["initial"] = {
                "name": site.name,
                "allowed_origins": site.allowed_origins,
                "sample_rate": site.sample_rate,
                "retention_days": site.retention_days,
                "kept_query_params": site.kept_query_params,
                "route_rules": [(rule.pattern, rule.route) for rule in site.route_rules.all()],
            }
        super().__init__(*args, **kwargs)
        if site is not None and site.is_builtin:
            self.fields["name"].disabled = True
            self.fields["name"].help_text = "The built-in site cannot be renamed."
            del self.fields["allowed_origins"]

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        taken = Site.objects.filter(name=name)
        if self.site is not None:
            taken = taken.exclude(pk=self.site.pk)
        if taken.exists():
            raise ValidationError("A site with this name already exists.", code="unique")
        return name


class CompareForm(forms.Form):
    """What the compare page puts side by side, besides the dashboard's
    own range and filters (DashboardQueryForm)."""

    mode = forms.ChoiceField(
        label="Compare",
        choices=[("periods", "Two periods"), ("releases", "Two releases")],
        required=False,
        initial="periods",
    )
    baseline = forms.ChoiceField(
        label="Against",
        choices=[("previous", "The previous period"), ("week", "The same period a week earlier")],
        required=False,
        initial="previous",
    )
    a = forms.CharField(label="Release A (before)", required=False, max_length=100)
    b = forms.CharField(label="Release B (after)", required=False, max_length=100)
