# Per-tenant (v2) key fingerprints and the key blocklist (issue 12 §3). Schema only: a tenant's
# salt is made the first time it is needed, and existing fingerprints stay as they are (legacy
# v1: 64 hex characters); the column widens for the "v2:" prefix. docs/operations.md, "Key
# fingerprints: the v2 upgrade and the blocklist".

import uuid

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("custody", "0002_encryption_key_usage"),
        ("tenants", "0010_custody_models_moved"),
    ]

    operations = [
        migrations.CreateModel(
            name="FingerprintSalt",
            fields=[
                (
                    "tenant",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="fingerprint_salt",
                        serialize=False,
                        to="tenants.tenant",
                    ),
                ),
                ("salt", models.CharField(max_length=64)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.AlterField(
            model_name="providerkey",
            name="fingerprint",
            field=models.CharField(max_length=80),
        ),
        migrations.CreateModel(
            name="BlockedKey",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        default=uuid.uuid4, editable=False, primary_key=True, serialize=False
                    ),
                ),
                ("provider", models.CharField(max_length=32)),
                ("fingerprint", models.CharField(max_length=80)),
                ("hint", models.CharField(blank=True, max_length=40)),
                ("reason", models.CharField(blank=True, max_length=500)),
                ("created_by", models.CharField(max_length=300)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "tenant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="blocked_keys",
                        to="tenants.tenant",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("tenant", "provider", "fingerprint"),
                        name="blockedkey_unique_fingerprint",
                    )
                ],
            },
        ),
    ]
