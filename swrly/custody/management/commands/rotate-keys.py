import contextlib
import getpass
import sys
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from swrly.audit.writer import Actor
from swrly.custody.key_usage import KeyUsage, encryption_key_usage, encryption_key_usage_record
from swrly.custody.services import (
    key_rotation_finish,
    key_rotation_rewrapped,
    key_rotation_start,
)
from swrly.keys.errors import KeyServiceError
from swrly.keys.keyring import generate_key, get_keyring
from swrly.keys.rotation import (
    RewrappedToken,
    RewrapReport,
    count_live_tokens,
    rewrap_live_tokens,
)
from swrly.redis_urls import display_url

ROLLOUT = """\
A new encryption key (keep it secret; it is not stored anywhere):

    {key}

Roll it out in this order, so that no process ever meets a token under a key it does not know:

  1. Add it to BYOK_ENCRYPTION_KEY_FALLBACKS on every web and worker process; restart them all.
     (Every process can now read tokens under the new key; none writes with it yet.)
  2. Make it BYOK_ENCRYPTION_KEY on every process, and move the old current key into
     BYOK_ENCRYPTION_KEY_FALLBACKS; restart them all. New tokens now use the new key.
  3. python manage.py rotate-keys            rewraps live tokens still under the old key.
  4. python manage.py rotate-keys --check    exits 0 once no live token needs the old key.
  5. Remove the old key from BYOK_ENCRYPTION_KEY_FALLBACKS everywhere; restart.
"""


class Command(BaseCommand):
    help = (
        "Rewrap live BYOK tokens to the current encryption key (or --generate/--dry-run/--check)."
    )
    # The start-up checks (swrly.checks.STARTUP_TAG; custody may not import the composition
    # layer), not the usage-budget one: rotating is how a key past its budget (E008) is retired.
    requires_system_checks = ["swrly_startup"]

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--generate", action="store_true", help="Print a new key and the rollout."
        )
        mode.add_argument("--dry-run", action="store_true", help="Count live tokens per key id.")
        mode.add_argument(
            "--check", action="store_true", help="Exit 0 only when no token needs a fallback key."
        )
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument(
            "--actor", default="", help="Who runs the rotation (default: the OS user)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["generate"]:
            self.stdout.write(ROLLOUT.format(key=generate_key()))
            return
        keyring = get_keyring()
        current = keyring.current.key_id_hex
        self.stdout.write(self._key_store())
        try:
            if options["dry_run"] or options["check"]:
                counts = count_live_tokens(batch_size=options["batch_size"])
                self._print_counts(counts, current)
                self._print_usage()
                dependent = sum(n for key_id, n in counts.items() if key_id != current)
                if options["check"] and dependent:
                    raise CommandError(
                        f"{dependent} live token(s) still need a key other than the current one; "
                        "run `rotate-keys` first"
                    )
                if options["check"]:
                    self.stdout.write("No live token depends on a fallback key; it can be retired.")
                return
            self._rotate(options, current)
        except KeyServiceError as exc:
            raise CommandError(str(exc)) from exc

    def _key_store(self) -> str:
        """Which key store the command reads, and why that one (a command run in another shell
        under `make run` takes the running stack's from its runtime file)."""
        url = settings.BYOK_REDIS_URL or settings.REDIS_URL
        runtime = settings.DEVSTACK_RUNTIME
        if runtime is not None and "BYOK_REDIS_URL" in runtime.applied:
            where = f"the running `make run` stack's (pid {runtime.pid}, {runtime.path})"
        else:
            where = (
                "BYOK_REDIS_URL" if settings.BYOK_REDIS_URL != settings.REDIS_URL else "REDIS_URL"
            )
        return f"Key store: {display_url(url)} ({where})"

    def _print_counts(self, counts: Mapping[str, int], current: str) -> None:
        self.stdout.write(f"Live tokens per encryption key id (current: {current}):")
        for key_id, n in sorted(counts.items()):
            label = "current" if key_id == current else "fallback or retired"
            self.stdout.write(f"  {key_id}  {n:>8}  {label}")
        if not counts:
            self.stdout.write("  (no live tokens)")

    def _print_usage(self) -> None:
        """Seals per encryption key against the AES-GCM budget (after moving pending counts)."""
        with contextlib.suppress(KeyServiceError):  # shown below as "did not answer"
            encryption_key_usage_record()
        rows: list[KeyUsage] = encryption_key_usage()
        self.stdout.write("Tokens sealed per encryption key id (AES-GCM budget 2**32):")
        for row in rows:
            pending = "" if row.pending is not None else "  (key store did not answer: ledger only)"
            self.stdout.write(
                f"  {row.key_id}  {row.sealed:>12}  {row.percent:6.2f}%  {row.role:<8}  "
                f"{row.state}{pending}"
            )
        current = rows[0]
        if current.state != "ok":
            self.stdout.write(
                self.style.WARNING(
                    f"The current key has sealed {current.sealed} tokens "
                    f"({'past the bound' if current.state == 'exhausted' else 'warning'}): "
                    "generate a new key (`rotate-keys --generate`) and roll it out."
                )
            )

    def _rotate(self, options: dict[str, Any], current: str) -> None:
        actor = Actor.system(f"rotate-keys ({options['actor'] or getpass.getuser()})")
        rotation = key_rotation_start(actor=actor, to_key_id=current)
        tty = sys.stdout.isatty() and self.stdout._out is sys.stdout

        def progress(report: RewrapReport) -> None:
            if tty:
                self.stdout.write(
                    f"\rscanned {report.scanned}, rewrapped {report.rewrapped}, "
                    f"failed {report.failed}",
                    ending="",
                )

        def rewrapped(tokens: list[RewrappedToken]) -> None:
            key_rotation_rewrapped(rotation=rotation, tokens=tokens, actor=actor)

        report = RewrapReport()
        try:
            rewrap_live_tokens(
                batch_size=options["batch_size"],
                progress=progress,
                report=report,
                rewrapped=rewrapped,
            )
        except BaseException:
            key_rotation_finish(rotation=rotation, report=report, actor=actor, interrupted=True)
            raise
        key_rotation_finish(rotation=rotation, report=report, actor=actor)
        with contextlib.suppress(KeyServiceError):  # else the beat task moves them later
            encryption_key_usage_record()  # the rewraps' seals, into the ledger at once
        if tty:
            self.stdout.write("")
        self.stdout.write(
            f"Rotation {rotation.pk} to key id {current}: scanned {report.scanned}, "
            f"rewrapped {report.rewrapped}, already current {report.already_current}, "
            f"already consumed {report.already_consumed}, changed meanwhile {report.changed}, "
            f"failed {report.failed}."
        )
        if report.failed:
            raise CommandError(
                f"{report.failed} token(s) could not be rewrapped (unknown key id or failed "
                "authentication); see docs/security.md"
            )
