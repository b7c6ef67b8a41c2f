import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0003_provider_keys_and_key_rotations"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="apitoken",
            name="created_by",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="apitoken",
            name="created_by_token",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.RESTRICT,
                related_name="created_tokens",
                to="tenants.apitoken",
            ),
        ),
        # Existing rows get their real origin in the next (data) migration.
        migrations.AddField(
            model_name="apitoken",
            name="created_via",
            field=models.CharField(
                choices=[
                    ("page", "API tokens page"),
                    ("api", "API, by another token"),
                    ("cli", "command line"),
                ],
                default="api",
                max_length=8,
            ),
            preserve_default=False,
        ),
    ]
