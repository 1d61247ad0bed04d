"""The built-in site `perfhub`: PerfHub's own pages carry the snippet and
report under it."""

from django.db import migrations

from apps.vitals.models import BUILTIN_SITE, new_public_key


def create_builtin_site(apps, schema_editor):  # type: ignore[no-untyped-def]
    Site = apps.get_model("vitals", "Site")
    Site.objects.get_or_create(
        name=BUILTIN_SITE,
        defaults={"public_key": new_public_key(), "is_builtin": True, "allowed_origins": [], "retention_days": 30},
    )


class Migration(migrations.Migration):
    dependencies = [("vitals", "0002_partition_metrics")]

    operations = [migrations.RunPython(create_builtin_site, migrations.RunPython.noop)]
