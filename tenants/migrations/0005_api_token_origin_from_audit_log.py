"""Existing tokens: where each was created, and by whom, as their `token.created` event says.

The audit event was written in the same transaction as each token, so it is the record:
- actor `user:…`      → created on the tokens page (`created_by` was already set);
- actor `token:… (swr_<prefix>…)` → created over the API with that token; the person behind
  it is that token's `created_by` (tokens are handled oldest first, so the parent's is known);
- actor `system:…`    → a management command (the command line).
A token without such an event keeps `api` with no creator: it has no recorded authority and
is refused when presented.
"""

import re

from django.db import migrations

TOKEN_ACTOR = re.compile(r"^token:.* \(swr_([0-9a-f]+)…\)$")


def forwards(apps, schema_editor):
    ApiToken = apps.get_model("tenants", "ApiToken")
    AuditEvent = apps.get_model("tenants", "AuditEvent")
    for token in ApiToken.objects.order_by("created_at", "pk"):
        event = (
            AuditEvent.objects.filter(
                tenant_id=token.tenant_id, action="token.created", target=f"token:{token.pk}"
            )
            .order_by("seq")
            .first()
        )
        actor = event.actor if event is not None else ""
        match = TOKEN_ACTOR.match(actor)
        if actor.startswith("user:") or (not actor and token.created_by_id is not None):
            token.created_via = "page"
        elif match:
            token.created_via = "api"
            parent = ApiToken.objects.filter(
                tenant_id=token.tenant_id, prefix=match.group(1)
            ).first()
            if parent is not None:
                token.created_by_token = parent
                token.created_by_id = parent.created_by_id
        elif actor.startswith("system:"):
            token.created_via = "cli"
        token.save(update_fields=["created_via", "created_by_token", "created_by"])


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0004_api_token_creator_chain_and_origin"),
    ]

    operations = [
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
