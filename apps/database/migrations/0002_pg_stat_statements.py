"""Create pg_stat_statements where the server offers it.

Guarded so that it never fails: SQLite has no extensions, a server may not
ship the extension, and a role without the right to create it still gets a
working PerfHub (the database page then says how to enable it).
"""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps


def create_extension(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    from django.db import DatabaseError, transaction

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'")
        if cursor.fetchone() is None:
            return
    try:
        # A savepoint, so a permission error does not abort the migration's transaction.
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    except DatabaseError:
        pass


class Migration(migrations.Migration):
    dependencies = [("database", "0001_snapshots")]

    operations = [migrations.RunPython(create_extension, migrations.RunPython.noop, elidable=False)]
