"""The audit models, moved from `tenants`: state only, the tables keep their names (and the
PostgreSQL append-only triggers of tenants 0002 and 0008)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("tenants", "0009_move_audit_models_to_audit_app"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="AuditChainHead",
                    fields=[
                        (
                            "chain",
                            models.CharField(max_length=36, primary_key=True, serialize=False),
                        ),
                        ("seq", models.BigIntegerField(default=0)),
                        ("last_hash", models.CharField(max_length=64)),
                        ("mac", models.CharField(blank=True, default="", max_length=64)),
                    ],
                    options={
                        "db_table": "tenants_auditchainhead",
                    },
                ),
                migrations.CreateModel(
                    name="AuditSuppression",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("chain", models.CharField(max_length=36)),
                        ("action", models.CharField(max_length=64)),
                        ("source", models.CharField(max_length=300)),
                        (
                            "window_start",
                            models.BigIntegerField(
                                help_text="Start of the window, in epoch seconds."
                            ),
                        ),
                        ("count", models.PositiveIntegerField(default=0)),
                        ("recorded", models.PositiveIntegerField(default=0)),
                    ],
                    options={
                        "db_table": "tenants_auditsuppression",
                        "indexes": [
                            models.Index(
                                fields=["chain", "window_start"], name="auditsuppression_chain"
                            )
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("chain", "action", "source", "window_start"),
                                name="auditsuppression_unique",
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="AuditCheckpoint",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("chain", models.CharField(max_length=36)),
                        ("seq", models.BigIntegerField()),
                        ("head_hash", models.CharField(max_length=64)),
                        ("created_at", models.DateTimeField()),
                        ("prev_signature", models.CharField(blank=True, max_length=128)),
                        ("key_id", models.CharField(max_length=16)),
                        ("signature", models.CharField(max_length=128)),
                        (
                            "tenant",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="audit_checkpoints",
                                to="tenants.tenant",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "tenants_auditcheckpoint",
                        "ordering": ["chain", "seq"],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("chain", "seq"), name="auditcheckpoint_chain_seq_unique"
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="AuditEvent",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("chain", models.CharField(max_length=36)),
                        ("seq", models.BigIntegerField()),
                        ("created_at", models.DateTimeField()),
                        ("actor", models.CharField(max_length=300)),
                        ("action", models.CharField(max_length=64)),
                        ("target", models.CharField(blank=True, max_length=300)),
                        ("metadata", models.JSONField(blank=True, default=dict)),
                        ("ip", models.GenericIPAddressField(blank=True, null=True)),
                        ("user_agent", models.CharField(blank=True, max_length=512)),
                        ("prev_hash", models.CharField(max_length=64)),
                        ("hash", models.CharField(max_length=64)),
                        ("hash_version", models.PositiveSmallIntegerField(default=1)),
                        ("key_id", models.CharField(blank=True, default="", max_length=16)),
                        (
                            "actor_user",
                            models.ForeignKey(
                                blank=True,
                                db_constraint=False,
                                null=True,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "tenant",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="audit_events",
                                to="tenants.tenant",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "tenants_auditevent",
                        "ordering": ["-created_at", "-id"],
                        "indexes": [
                            models.Index(
                                fields=["tenant", "-created_at"], name="auditevent_tenant_time"
                            ),
                            models.Index(
                                fields=["tenant", "action"], name="auditevent_tenant_action"
                            ),
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("chain", "seq"), name="auditevent_chain_seq_unique"
                            )
                        ],
                    },
                ),
            ],
        ),
    ]
