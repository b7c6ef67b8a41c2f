"""`manage.py sandbox-provider [--port P] [--host 127.0.0.1] [--gateway litellm]`: the sandbox.

It only serves: a run reaches it only where PROVIDER_BASE_URLS names it (`sandbox=<url>`), and
plain http:// is allowed there only with DEBUG (see runs.providers.egress).
"""

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.sandbox import (
    ANTHROPIC_PATH,
    COUNT_TOKENS_PATH,
    GATEWAYS,
    MODELS_PATH,
    OPENAI_PATH,
    SandboxServer,
)

DEFAULT_PORT = 8765


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = (
        "Serve the sandbox model provider (OpenAI- and Anthropic-compatible, deterministic) on "
        "loopback until Ctrl-C."
    )
    # It touches neither the database nor the key store, so it starts in a bare checkout.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--port", type=int, default=DEFAULT_PORT, help="0 picks a free port (printed)."
        )
        parser.add_argument(
            "--host", default="127.0.0.1", help="A loopback address; anything else is refused."
        )
        parser.add_argument(
            "--gateway",
            choices=GATEWAYS,
            default=None,
            help="Rename response headers the way this gateway does (to rehearse one).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host, port = options["host"], options["port"]
        try:
            server = SandboxServer(host=host, port=port, gateway=options["gateway"]).start()
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc}") from None
        configured = settings.PROVIDER_BASE_URLS.get("sandbox")
        lines = [
            f"Sandbox provider listening on {server.url} (loopback only; Ctrl-C stops it)",
            f"  POST {server.url}{OPENAI_PATH}  (Authorization: Bearer <any key>)",
            f"  POST {server.url}{ANTHROPIC_PATH}  (x-api-key or Bearer, anthropic-version)",
            f"  POST {server.url}{COUNT_TOKENS_PATH}, GET {server.url}{MODELS_PATH}",
            "Point Swrly at it (plain http:// needs DEBUG=True):",
            f"  PROVIDER_BASE_URLS=sandbox={server.url}",
        ]
        if configured and configured.rstrip("/") == server.url:
            lines.append("These settings already name it.")
        elif configured:
            lines.append(f"These settings name the sandbox at {configured}, not here.")
        else:
            lines.append("These settings do not name the sandbox: runs cannot reach it yet.")
        self.stdout.write("\n".join(lines))
        self.stdout.flush()
        # Ctrl-C works even when started in the background with SIGINT ignored; SIGTERM stops
        # it the same way.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            self.stdout.write("Sandbox provider stopped.")
        finally:
            server.stop()
