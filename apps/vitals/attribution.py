"""What each metric's attribution blames, as the attribution rollups count it.

web-vitals' attribution build explains each metric (its README,
"Attribution"); the snippet (static/perfhub/rum.js) keeps the fields below.
A metric is counted once per kind it names: an LCP under its element and
under its resource URL, an INP under its target and under its longest
script. Phases are durations in milliseconds whose weighted means the
attribution pages show.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Keys longer than this are cut: enough to tell selectors and URLs apart,
# and short enough for the rollup's unique index.
MAX_KEY_LENGTH = 200
# Attribution for the site or route as a whole (phases without a culprit).
WHOLE = ""


@dataclass(frozen=True)
class Kind:
    name: str
    label: str
    field: str | None
    """The attribution field naming the culprit; None: the metric as a whole."""


@dataclass(frozen=True)
class Spec:
    kinds: tuple[Kind, ...]
    phases: tuple[tuple[str, str], ...]
    """(attribution field, label) of each phase, in order."""


SPECS: dict[str, Spec] = {
    "LCP": Spec(
        kinds=(Kind("element", "LCP element", "target"), Kind("resource", "LCP resource", "url")),
        phases=(
            ("timeToFirstByte", "TTFB"),
            ("resourceLoadDelay", "Resource load delay"),
            ("resourceLoadDuration", "Resource load duration"),
            ("elementRenderDelay", "Element render delay"),
        ),
    ),
    "INP": Spec(
        kinds=(
            Kind("target", "Interaction target", "interactionTarget"),
            Kind("script", "Longest script", "longestScriptURL"),
        ),
        phases=(
            ("inputDelay", "Input delay"),
            ("processingDuration", "Processing"),
            ("presentationDelay", "Presentation delay"),
            ("longestScriptDuration", "Longest script"),
        ),
    ),
    "CLS": Spec(
        kinds=(Kind("shift", "Shift source", "largestShiftTarget"),),
        phases=(("largestShiftValue", "Largest shift"),),
    ),
    "FCP": Spec(
        kinds=(Kind("phases", "Page load", None),),
        phases=(("timeToFirstByte", "TTFB"), ("firstByteToFCP", "First byte to FCP")),
    ),
    "TTFB": Spec(
        kinds=(Kind("phases", "Page load", None), Kind("server", "Server-Timing (PerfHub pages)", None)),
        phases=(
            ("waitingDuration", "Waiting"),
            ("cacheDuration", "Cache"),
            ("dnsDuration", "DNS"),
            ("connectionDuration", "Connection"),
            ("requestDuration", "Request"),
        ),
    ),
}
# The Server-Timing names PerfHub's own pages send (apps.metrics.middleware).
SERVER_TIMING_PHASES = (("db", "Database"), ("cache", "Cache"), ("app", "Application"))


def attribution_parts(name: str, attribution: Mapping[str, Any]) -> list[tuple[str, str, dict[str, float]]]:
    """(kind, key, phases) for each kind this metric's attribution names.
    The worker calls this for every metric it writes: the phases are read
    once per metric, and shared by its kinds."""
    spec = SPECS.get(name)
    if spec is None or not attribution:
        return []
    phases = {p: attribution[p] for p in _PHASE_FIELDS[name] if type(attribution.get(p)) in _NUMBER_TYPES}
    parts = []
    for kind in spec.kinds:
        if kind.name == "server":
            timing = attribution.get("serverTiming")
            if isinstance(timing, Mapping):
                server = {p: timing[p] for p, _ in SERVER_TIMING_PHASES if type(timing.get(p)) in _NUMBER_TYPES}
                if server:
                    parts.append((kind.name, WHOLE, server))
        elif kind.field is None:
            if phases:
                parts.append((kind.name, WHOLE, phases))
        else:
            culprit = attribution.get(kind.field)
            if isinstance(culprit, str) and culprit:
                parts.append((kind.name, culprit[:MAX_KEY_LENGTH], phases))
    return parts


# Numbers as JSON decodes them (bool, a subclass of int, is not one).
_NUMBER_TYPES = frozenset({int, float})
_PHASE_FIELDS = {name: tuple(field for field, _ in spec.phases) for name, spec in SPECS.items()}
