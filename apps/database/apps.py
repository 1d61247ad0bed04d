from django.apps import AppConfig


class DatabaseConfig(AppConfig):
    name = "apps.database"
    label = "database"
    verbose_name = "Database"
