import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.resilience.health import health_report


class Command(BaseCommand):
    help = "Run every health check and print the results; exits 1 when PerfHub is unhealthy (a check is down)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", dest="as_json", action="store_true", help="Print JSON instead of a table.")
        parser.add_argument("--timeout", type=float, default=None, help="Seconds per check (default: settings).")

    def handle(self, *args: Any, as_json: bool = False, timeout: float | None = None, **options: Any) -> None:
        if timeout is not None and timeout <= 0:
            raise CommandError("--timeout must be positive.")
        report = health_report(timeout=timeout)
        if as_json:
            self.stdout.write(json.dumps(_as_dict(report), indent=2))
        else:
            rows = [(c.name, c.status, f"{c.latency_ms:.1f} ms", c.message) for c in report.checks]
            widths = [max(len(row[i]) for row in [("check", "status", "latency", "message"), *rows]) for i in range(3)]
            for name, status, latency, message in [("check", "status", "latency", "message"), *rows]:
                self.stdout.write(f"{name:<{widths[0]}}  {status:<{widths[1]}}  {latency:>{widths[2]}}  {message}")
            self.stdout.write(f"\noverall: {report.status}")
        if not report.healthy:
            # SystemExit rather than CommandError: the report is already printed.
            raise SystemExit(1)


def _as_dict(report: Any) -> dict[str, Any]:
    return {
        "status": report.status,
        "checks": [
            {"name": c.name, "status": c.status, "latency_ms": c.latency_ms, "message": c.message}
            for c in report.checks
        ],
    }
