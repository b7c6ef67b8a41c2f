"""`python -m swrly.dev.seed_demo SLUG`: the demo workflow and a fresh demo API token (make run).

Creates the demo workflow (3 sandbox steps) if missing, and a new developer API token named
'make-run demo' (earlier ones are revoked). The last two lines printed are the workflow id and
the token.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

import django

if TYPE_CHECKING:
    from runs.models import Workflow
    from tenants.models import Tenant

DEMO_WORKFLOW = "demo-report"
DEMO_TOKEN_NAME = "make-run demo"  # noqa: S105 (a name, not a secret)
DEMO_STEPS = [
    {
        "name": "outline",
        "provider": "sandbox",
        "model": "sandbox-1",
        "system": "You outline reports.",
        "prompt": "Outline a short report about {{ input.topic }}.",
    },
    {
        "name": "draft",
        "provider": "sandbox",
        "model": "sandbox-1",
        "prompt": "Write the report from this outline: {{ steps.outline.output }}",
    },
    {
        "name": "review",
        "provider": "sandbox",
        "model": "sandbox-1",
        "prompt": "Review this draft for accuracy: {{ steps.draft.output }}",
    },
]


def seed_demo(tenant: Tenant) -> tuple[Workflow, str]:
    """The demo workflow (created when missing) and the secret of a new demo API token."""
    from runs.models import Workflow
    from runs.services import workflow_create
    from swrly.audit.writer import Actor
    from tenants.access import scoped
    from tenants.authority import Principal
    from tenants.models import ApiToken, Role
    from tenants.services import api_token_create, api_token_revoke

    actor = Actor.system("seed-demo")
    workflow = scoped(Workflow, tenant).filter(name=DEMO_WORKFLOW).first()
    if workflow is None:
        workflow = workflow_create(
            tenant=tenant,
            name=DEMO_WORKFLOW,
            description="Outline, draft and review a report with the sandbox provider.",
            steps=DEMO_STEPS,
            actor=actor,
        )
    for token in scoped(ApiToken, tenant).filter(name=DEMO_TOKEN_NAME, revoked_at=None):
        api_token_revoke(token=token, actor=actor)
    _, secret = api_token_create(
        tenant=tenant,
        name=DEMO_TOKEN_NAME,
        role=Role.DEVELOPER,
        by=Principal.console("seed-demo"),
    )
    return workflow, secret


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m swrly.dev.seed_demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("slug")
    options = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "swrly.settings")
    django.setup()
    from tenants.models import Tenant

    tenant = Tenant.objects.filter(slug=options.slug).first()
    if tenant is None:
        print(f"Error: no tenant with slug {options.slug!r}", file=sys.stderr)  # noqa: T201
        return 1
    workflow, secret = seed_demo(tenant)
    print(f"Demo workflow {DEMO_WORKFLOW} and a new demo token for {tenant.slug}:")  # noqa: T201
    print(workflow.pk)  # noqa: T201
    print(secret)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
