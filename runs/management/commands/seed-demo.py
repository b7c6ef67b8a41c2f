"""`python manage.py seed-demo SLUG`: the demo workflow and a fresh demo API token (make run)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.models import Workflow
from runs.services import workflow_create
from swrly.audit.writer import Actor
from tenants.access import scoped
from tenants.authority import Principal
from tenants.models import ApiToken, Role, Tenant
from tenants.services import api_token_create, api_token_revoke

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


class Command(BaseCommand):
    help = (
        "Create the demo workflow (3 sandbox steps) if missing, and a new developer API token "
        "named 'make-run demo' (earlier ones are revoked). The last two lines are the workflow id "
        "and the token."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["slug"]).first()
        if tenant is None:
            raise CommandError(f"no tenant with slug {options['slug']!r}")
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
        self.stdout.write(f"Demo workflow {DEMO_WORKFLOW} and a new demo token for {tenant.slug}:")
        self.stdout.write(str(workflow.pk))
        self.stdout.write(secret)
