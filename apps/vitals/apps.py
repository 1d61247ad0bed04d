from django.apps import AppConfig


class VitalsConfig(AppConfig):
    name = "apps.vitals"
    label = "vitals"
    verbose_name = "Web Vitals"
