from django.db import migrations

# Block rows (DimensionRollup, AttributionRollup) are rewritten by every
# worker batch that touches their block: a week block forty times for a
# million metrics. With full pages each rewrite is a new row version on
# another page, with a new entry in every index, and the lookups of the next
# batches wade through the dead versions until a vacuum. Room left on each
# page makes the rewrite a HOT update: same page, no index entry, and the
# dead version pruned by the next visitor to the page. Rollup rows, nearly
# all inserted once, keep full pages.
TABLES = ("vitals_dimensionrollup", "vitals_attributionrollup")


def set_fillfactor(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = 50)")


def reset_fillfactor(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(f"ALTER TABLE {table} RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [
        ("vitals", "0008_dimension_rollup_dense_columns"),
    ]

    operations = [migrations.RunPython(set_fillfactor, reset_fillfactor)]
