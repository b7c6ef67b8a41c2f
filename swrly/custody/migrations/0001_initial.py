# The custody models moved here from tenants (issue 11). Their tables, indexes and constraints
# already exist (tenants 0003): this migration changes Django's state only, and points the
# models' content types (and so their permissions) at the new app label.

import uuid

import django.db.models.deletion
from django.db import migrations, models

MODELS = ("providerkey", "keyrotation", "keyrotationtenant")


def relabel_content_types(apps, schema_editor):  # type: ignore[no-untyped-def]
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.using(schema_editor.connection.alias).filter(
        app_label="tenants", model__in=MODELS
    ).update(app_label="custody")


def unlabel_content_types(apps, schema_editor):  # type: ignore[no-untyped-def]
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.using(schema_editor.connection.alias).filter(
        app_label="custody", model__in=MODELS
    ).update(app_label="tenants")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("tenants", "0008_auditcheckpoint_append_only_trigger"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="KeyRotation",
                    fields=[
                        (
                            "id",
                            models.UUIDField(
                                default=uuid.uuid4,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        ("started_at", models.DateTimeField()),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        ("actor", models.CharField(max_length=300)),
                        ("from_key_ids", models.JSONField(blank=True, default=list)),
                        ("to_key_id", models.CharField(max_length=16)),
                        ("scanned", models.PositiveIntegerField(default=0)),
                        ("rewrapped", models.PositiveIntegerField(default=0)),
                        ("already_consumed", models.PositiveIntegerField(default=0)),
                        ("failed", models.PositiveIntegerField(default=0)),
                        (
                            "outcome",
                            models.CharField(
                                choices=[
                                    ("running", "Running"),
                                    ("succeeded", "Succeeded"),
                                    ("failed", "Failed"),
                                ],
                                default="running",
                                max_length=16,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "tenants_keyrotation",
                        "ordering": ["-started_at"],
                    },
                ),
                migrations.CreateModel(
                    name="KeyRotationTenant",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("rewrapped", models.PositiveIntegerField(default=0)),
                        (
                            "rotation",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="tenants",
                                to="custody.keyrotation",
                            ),
                        ),
                        (
                            "tenant",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="key_rotations",
                                to="tenants.tenant",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "tenants_keyrotationtenant",
                        "ordering": ["rotation", "tenant"],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("rotation", "tenant"), name="rotationtenant_unique"
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="ProviderKey",
                    fields=[
                        (
                            "id",
                            models.UUIDField(
                                default=uuid.uuid4,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        ("provider", models.CharField(max_length=32)),
                        ("fingerprint", models.CharField(max_length=64)),
                        ("hint", models.CharField(max_length=40)),
                        ("first_seen_at", models.DateTimeField()),
                        ("last_seen_at", models.DateTimeField()),
                        ("use_count", models.PositiveIntegerField(default=0)),
                        (
                            "tenant",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="provider_keys",
                                to="tenants.tenant",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "tenants_providerkey",
                        "ordering": ["tenant", "provider", "-last_seen_at"],
                        "indexes": [
                            models.Index(
                                fields=["tenant", "provider", "-last_seen_at"],
                                name="providerkey_recent",
                            )
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("tenant", "provider", "fingerprint"),
                                name="providerkey_unique_fingerprint",
                            )
                        ],
                    },
                ),
            ],
        ),
        migrations.RunPython(relabel_content_types, unlabel_content_types, elidable=True),
    ]
