"""`python -m swrly.dev.prepare SLUG --name NAME --owner-email EMAIL [--embedded-redis]`: what
`make run` does before it starts its processes, in one process and quietly.

Runs the system checks (printing only what they find; with `--embedded-redis` the notes about
the key store, broker and cache sharing one server, which is how `make run` is built, are left
out), applies the migrations that are missing (a one-line summary, nothing when none were),
creates the demo tenant and its owner when the tenant is missing, and seeds the demo
(swrly.dev.seed_demo). The last line of its output is one JSON object for the launcher:
`migrations` (the summary or null), `tenant_created`, `owner`, `password` (the owner's one-time
password, on the run that created it only), `workflow` (its id) and `token` (a new demo API
token).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import django

# make run puts the key store, the broker and the cache on its one embedded Valkey on purpose
# (docs/operations.md, "Which Redis for what"): these notes say so at every start otherwise.
EMBEDDED_REDIS_NOTES = ("swrly.W021", "swrly.W023", "swrly.I021")


def _check(*, embedded_redis: bool) -> None:
    """The system checks, printed only when they find something; errors stop the stack."""
    from django.conf import settings
    from django.core.management.base import BaseCommand

    if embedded_redis:
        settings.SILENCED_SYSTEM_CHECKS = [*settings.SILENCED_SYSTEM_CHECKS, *EMBEDDED_REDIS_NOTES]
    BaseCommand().check(display_num_errors=False)


def _migrate() -> str | None:
    """Applies the missing migrations; a one-line summary, or None when there were none."""
    from django.core.management import call_command
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if not plan:
        return None
    call_command("migrate", interactive=False, verbosity=0)
    names = [f"{migration.app_label}.{migration.name}" for migration, _backwards in plan]
    shown = ", ".join(names) if len(names) <= 3 else f"{names[0]} … {names[-1]}"
    return f"Applied {len(names)} migration{'s' if len(names) != 1 else ''} ({shown})."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swrly.dev.prepare", description=__doc__)
    parser.add_argument("slug")
    parser.add_argument("--name", default="")
    parser.add_argument("--owner-email", required=True)
    parser.add_argument("--embedded-redis", action="store_true")
    options = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "swrly.settings")
    django.setup()

    from django.core.management.base import SystemCheckError

    from swrly.audit.writer import Actor
    from swrly.dev.seed_demo import seed_demo
    from swrly.identity.services import password_change_require
    from tenants.models import Tenant
    from tenants.services import tenant_create

    try:
        _check(embedded_redis=options.embedded_redis)
    except SystemCheckError as exc:
        print(exc, file=sys.stderr)  # noqa: T201
        return 1
    migrations = _migrate()
    tenant = Tenant.objects.filter(slug=options.slug).first()
    created, password = tenant is None, None
    if tenant is None:
        tenant, owner, password = tenant_create(
            slug=options.slug,
            name=options.name,
            owner_email=options.owner_email,
            actor=Actor.system("create-tenant"),
        )
        if password:  # a generated password is changed at the first sign-in
            password_change_require(user=owner)
    workflow, token = seed_demo(tenant)
    report = {
        "migrations": migrations,
        "tenant_created": created,
        "owner": options.owner_email,
        "password": password or None,
        "workflow": str(workflow.pk),
        "token": token,
    }
    print(json.dumps(report))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
