"""DimensionRollup's sketch moves from a JSON column to three: the zero
bucket's weight, the lowest bucket and the bucket weights as bytes
(models.DimensionRollup). Stored blocks are converted, not dropped: on
PostgreSQL the dense JSON form ({"z", "o", "d": base64}) is decoded by the
database; the rest (blocks still in the sparse form {"z", "b"}, and every
block on SQLite) here, a thousand rows at a time."""

import base64
import json

import numpy as np
from django.db import migrations, models

TO_COLUMNS_SQL = """
UPDATE vitals_dimensionrollup SET
    sketch_zero = COALESCE((sketch ->> 'z')::float8, 0),
    sketch_offset = COALESCE((sketch ->> 'o')::int, 0),
    sketch_weights = decode(sketch ->> 'd', 'base64')
WHERE sketch ? 'd'
"""


def sketch_columns(sketch: dict | str | None) -> tuple[float, int, bytes]:
    """(zero, lowest bucket, weights as bytes) of a sketch in either JSON form."""
    if isinstance(sketch, str):
        sketch = json.loads(sketch)
    sketch = sketch or {}
    zero = float(sketch.get("z") or 0.0)
    if "d" in sketch:
        return zero, int(sketch.get("o") or 0), base64.b64decode(sketch["d"] or "")
    bins = {int(i): float(w) for i, w in (sketch.get("b") or {}).items()}
    if not bins:
        return zero, 0, b""
    lowest = min(bins)
    weights = np.zeros(max(bins) - lowest + 1, dtype="<f8")
    for index, weight in bins.items():
        weights[index - lowest] = weight
    return zero, lowest, weights.tobytes()


def to_columns(apps, schema_editor):  # type: ignore[no-untyped-def]
    DimensionRollup = apps.get_model("vitals", "DimensionRollup")
    rows = DimensionRollup.objects.all()
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TO_COLUMNS_SQL)
        rows = rows.exclude(sketch__has_key="d")
    batch = []
    for block in rows.only("sketch").iterator(chunk_size=1000):
        block.sketch_zero, block.sketch_offset, block.sketch_weights = sketch_columns(block.sketch)
        batch.append(block)
        if len(batch) == 1000:
            DimensionRollup.objects.bulk_update(batch, ["sketch_zero", "sketch_offset", "sketch_weights"])
            batch = []
    DimensionRollup.objects.bulk_update(batch, ["sketch_zero", "sketch_offset", "sketch_weights"])


def to_json(apps, schema_editor):  # type: ignore[no-untyped-def]
    DimensionRollup = apps.get_model("vitals", "DimensionRollup")
    batch = []
    for block in DimensionRollup.objects.only("sketch_zero", "sketch_offset", "sketch_weights").iterator(
        chunk_size=1000
    ):
        block.sketch = {
            "z": block.sketch_zero,
            "o": block.sketch_offset,
            "d": base64.b64encode(bytes(block.sketch_weights)).decode("ascii"),
        }
        batch.append(block)
        if len(batch) == 1000:
            DimensionRollup.objects.bulk_update(batch, ["sketch"])
            batch = []
    DimensionRollup.objects.bulk_update(batch, ["sketch"])


class Migration(migrations.Migration):
    dependencies = [
        ("vitals", "0007_attribution_rollups"),
    ]

    operations = [
        migrations.AddField(model_name="dimensionrollup", name="sketch_zero", field=models.FloatField(default=0.0)),
        migrations.AddField(model_name="dimensionrollup", name="sketch_offset", field=models.IntegerField(default=0)),
        migrations.AddField(
            model_name="dimensionrollup", name="sketch_weights", field=models.BinaryField(default=b"")
        ),
        migrations.RunPython(to_columns, to_json, elidable=True),
        migrations.RemoveField(model_name="dimensionrollup", name="sketch"),
    ]
