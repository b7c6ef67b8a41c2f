"""A PostgreSQL trigger that refuses UPDATE and DELETE on audit events, below the ORM.

Other engines rely on the ORM guard (AppendOnlyQuerySet). TRUNCATE is left to database
privileges (docs/operations.md): Django's test flush uses it, and verify-audit still notices a
truncated chain because the chain head no longer matches.
"""

from django.db import migrations

UP = """
CREATE OR REPLACE FUNCTION swrly_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER tenants_auditevent_append_only
    BEFORE UPDATE OR DELETE ON tenants_auditevent
    FOR EACH ROW EXECUTE FUNCTION swrly_auditevent_append_only();
"""
DOWN = """
DROP TRIGGER IF EXISTS tenants_auditevent_append_only ON tenants_auditevent;
DROP FUNCTION IF EXISTS swrly_auditevent_append_only();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UP, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DOWN, params=None)


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
