# ProviderKey, KeyRotation and KeyRotationTenant moved to swrly.custody (issue 11). The tables
# stay (custody's models name them with db_table): this migration changes Django's state only.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0009_move_audit_models_to_audit_app"),
        ("custody", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.DeleteModel(name="KeyRotationTenant"),
                migrations.DeleteModel(name="KeyRotation"),
                migrations.DeleteModel(name="ProviderKey"),
            ],
        ),
    ]
