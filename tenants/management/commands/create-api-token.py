from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tenants.authority import Principal
from tenants.models import Role, Tenant
from tenants.services import api_token_create


class Command(BaseCommand):
    help = (
        "Create an API token for a tenant; prints the secret once, as the last line. The token "
        "is recorded as made from the command line: no member stands behind it, so no member's "
        "removal or demotion revokes it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--role", required=True, choices=Role.values)

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["slug"]).first()
        if tenant is None:
            raise CommandError(f"no tenant with slug {options['slug']!r}")
        try:
            token, secret = api_token_create(
                tenant=tenant,
                name=options["name"],
                role=options["role"],
                # The operator at the console: the token's root of trust, no member behind it.
                by=Principal.console("create-api-token"),
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(
            f"Created {token.role} token {token.name!r} ({token.display_prefix}) for {tenant.slug}."
        )
        self.stdout.write(secret)
