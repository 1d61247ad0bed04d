from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        # Registers the OpenAPI description of the token authentication.
        from apps.core import schema  # noqa: F401
