"""manage.py export-evidence SLUG --from YYYY-MM-DD --to YYYY-MM-DD -o FILE"""

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from swrly.audit.writer import Actor
from swrly.evidence.bundle import EvidenceUnavailable, evidence_export, parse_period
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Write a tenant's signed evidence bundle (zip) for a period of whole UTC days."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--from", dest="date_from", required=True, help="YYYY-MM-DD (UTC)")
        parser.add_argument("--to", dest="date_to", required=True, help="YYYY-MM-DD, inclusive")
        parser.add_argument(
            "-o", "--output", required=True, help="the zip file to write ('-': stdout)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        period = parse_period(
            options["date_from"],
            options["date_to"],
            lambda field, message: CommandError(f"--{field}: {message}"),
        )
        tenant = Tenant.objects.filter(slug=options["slug"]).first()
        if tenant is None:
            raise CommandError(f"no tenant {options['slug']!r}")
        try:
            export = evidence_export(
                tenant=tenant, period=period, actor=Actor.system("export-evidence"), via="cli"
            )
        except EvidenceUnavailable as exc:
            raise CommandError(str(exc)) from None
        if options["output"] == "-":
            for chunk in export.chunks:
                self.stdout.buffer.write(chunk)  # type: ignore[attr-defined]
            return
        path = Path(options["output"])
        size = 0
        with path.open("wb") as handle:
            for chunk in export.chunks:
                handle.write(chunk)
                size += len(chunk)
        self.stderr.write(f"wrote {path} ({size} bytes)")
