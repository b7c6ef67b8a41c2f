"""On PostgreSQL, refuse UPDATE and DELETE on audit checkpoints too, below the ORM.

Reuses the function of 0002 (it names the refused operation, whatever the table).
"""

from django.db import migrations

UP = """
CREATE TRIGGER tenants_auditcheckpoint_append_only
    BEFORE UPDATE OR DELETE ON tenants_auditcheckpoint
    FOR EACH ROW EXECUTE FUNCTION swrly_auditevent_append_only();
"""
DOWN = "DROP TRIGGER IF EXISTS tenants_auditcheckpoint_append_only ON tenants_auditcheckpoint;"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UP, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DOWN, params=None)


class Migration(migrations.Migration):
    dependencies = [("tenants", "0007_keyed_audit_chain_and_checkpoints")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
