import base64
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from swrly.audit.checkpoints import audit_checkpoint_all
from swrly.audit.keys import generate_secret, public_key_of, signing_key_id
from swrly.audit.models import PLATFORM_CHAIN, tenant_model


class Command(BaseCommand):
    help = (
        "Sign a checkpoint for every audit chain with events since its last one (the beat task "
        "does this every AUDIT_CHECKPOINT_INTERVAL seconds). A chain that fails verification is "
        "not signed and the command exits non-zero."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force",
            action="store_true",
            help="Checkpoint every chain even without new events (after rotating the key).",
        )
        parser.add_argument(
            "--generate-keys",
            action="store_true",
            help="Print a new AUDIT_CHAIN_KEY, AUDIT_SIGNING_KEY and its public key; sign nothing.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["generate_keys"]:
            signing = generate_secret()
            public = public_key_of(signing)
            key_id = signing_key_id(base64.urlsafe_b64decode(public))
            self.stdout.write(f"AUDIT_CHAIN_KEY={generate_secret()}")
            self.stdout.write(f"AUDIT_SIGNING_KEY={signing}")
            self.stdout.write(f"AUDIT_SIGNING_PUBLIC_KEY={public}  # key id {key_id}")
            return
        names = {str(pk): slug for pk, slug in tenant_model().objects.values_list("pk", "slug")}
        names[PLATFORM_CHAIN] = PLATFORM_CHAIN
        refused = []
        for outcome in audit_checkpoint_all(force=options["force"]):
            label = names.get(outcome.chain, outcome.chain)
            if outcome.problem:
                line = f"REFUSED {label}: {outcome.problem}"
                refused.append(line)
            elif outcome.checkpoint is None:
                line = f"skip    {label}: no events since the last checkpoint"
            else:
                cp = outcome.checkpoint
                line = f"signed  {label}: checkpoint at #{cp.seq} by key {cp.key_id}"
            self.stdout.write(line)
        if refused:
            raise CommandError(f"{len(refused)} chain(s) not signed; first: {refused[0]}")
