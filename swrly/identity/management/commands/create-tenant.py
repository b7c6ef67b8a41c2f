from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from swrly.audit.writer import Actor
from swrly.identity.services import password_change_require
from tenants.models import Tenant
from tenants.services import tenant_create


class Command(BaseCommand):
    help = (
        "Create a tenant and its first owner; prints the owner's one-time password if new "
        "(it must be changed at the first sign-in)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--owner-email", required=True)
        parser.add_argument(
            "--exist-ok",
            action="store_true",
            help="Succeed without changes when the tenant already exists.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["exist_ok"] and Tenant.objects.filter(slug=options["slug"]).exists():
            self.stdout.write(f"Tenant {options['slug']} exists; nothing changed.")
            return
        try:
            with transaction.atomic():
                tenant, user, password = tenant_create(
                    slug=options["slug"],
                    name=options["name"],
                    owner_email=options["owner_email"],
                    actor=Actor.system("create-tenant"),
                )
                if password:
                    password_change_require(user=user)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(f"Created tenant {tenant.slug} with owner {user.get_username()}.")
        if password:
            self.stdout.write("It must be changed at the first sign-in.")
            self.stdout.write("The owner's one-time password (shown only now):")
            self.stdout.write(password)
        else:
            self.stdout.write("The owner already had an account; its password is unchanged.")
