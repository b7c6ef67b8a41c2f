"""The audit models moved to the `audit` app (swrly.audit): state only, no table changes."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0008_auditcheckpoint_append_only_trigger"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.DeleteModel(
                    name="AuditChainHead",
                ),
                migrations.RemoveField(
                    model_name="auditcheckpoint",
                    name="tenant",
                ),
                migrations.RemoveField(
                    model_name="auditevent",
                    name="actor_user",
                ),
                migrations.RemoveField(
                    model_name="auditevent",
                    name="tenant",
                ),
                migrations.DeleteModel(
                    name="AuditSuppression",
                ),
                migrations.DeleteModel(
                    name="AuditCheckpoint",
                ),
                migrations.DeleteModel(
                    name="AuditEvent",
                ),
            ],
        ),
    ]
