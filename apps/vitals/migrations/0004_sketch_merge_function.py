"""vitals_sketch_merge(a, b): the sum of two sketches in their JSON form
(apps.vitals.sketch), so that PostgreSQL merges rollup rows in one
INSERT ... ON CONFLICT without a round trip through Python. Buckets whose
weights cancel out are dropped, as Sketch.merge does."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION vitals_sketch_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'z', COALESCE((a ->> 'z')::float8, 0) + COALESCE((b ->> 'z')::float8, 0),
        'b', COALESCE(
            (SELECT jsonb_object_agg(k, w) FROM (
                SELECT k, SUM(v) AS w FROM (
                    SELECT key AS k, value::float8 AS v FROM jsonb_each_text(COALESCE(a -> 'b', '{}'::jsonb))
                    UNION ALL
                    SELECT key, value::float8 FROM jsonb_each_text(COALESCE(b -> 'b', '{}'::jsonb))
                ) AS parts
                GROUP BY k
                HAVING abs(SUM(v)) > 1e-9
            ) AS summed),
            '{}'::jsonb
        )
    )
$$;
"""
DROP = "DROP FUNCTION IF EXISTS vitals_sketch_merge(jsonb, jsonb);"


def create(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("vitals", "0003_builtin_site")]

    operations = [migrations.RunPython(create, drop)]
