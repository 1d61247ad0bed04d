from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        # schema registers the OpenAPI description of the token
        # authentication; signals connects the receivers that keep cached
        # token lookups current.
        from apps.core import schema, signals  # noqa: F401
