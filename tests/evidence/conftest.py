"""Exporting real bundles and running the standalone verifier on them, without Django."""

import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cryptography
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from swrly.evidence import verify_evidence

VERIFIER = Path(verify_evidence.__file__)


@dataclass
class Verdict:
    status: int
    out: str


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory):
    """A directory with the verifier and, on its path, only `cryptography` (and its cffi).

    The verifier runs as `python -I -S`: no site-packages, no PYTHONPATH, no user site, so
    Django and the project cannot be imported. Only the packages linked here can.
    """
    root = tmp_path_factory.mktemp("bare")
    site = root / "site"
    site.mkdir()
    packages = Path(cryptography.__file__).parent.parent
    for name in ("cryptography", "cffi", "pycparser"):
        (site / name).symlink_to(packages / name)
    for backend in packages.glob("_cffi_backend*"):
        (site / backend.name).symlink_to(backend)
    shutil.copy(VERIFIER, root / "verify_evidence.py")
    return root


def run_verifier(bare_python: Path, *args: str, stdin: str | None = None) -> Verdict:
    script = bare_python / "verify_evidence.py"
    code = (
        "import runpy, sys; "
        f"sys.path.insert(0, {str(bare_python / 'site')!r}); "
        f"sys.argv = [{str(script)!r}, *sys.argv[1:]]; "
        f"runpy.run_path({str(script)!r}, run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, *args],
        env={},
        cwd=bare_python,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Verdict(done.returncode, done.stdout + done.stderr)


def today() -> str:
    return timezone.now().date().isoformat()


def export_api(world, role="auditor", start=None, end=None):
    response = world.api(role).get(
        reverse("api:evidence-list"), {"from": start or today(), "to": end or today()}
    )
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)


def public_keys_file(tmp_path: Path) -> Path:
    from django.test import Client

    path = tmp_path / "audit-keys.json"
    path.write_bytes(Client().get(reverse("api:audit-keys")).content)
    return path


def read_zip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        return {name: bundle.read(name) for name in bundle.namelist()}


def write_zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    return out.getvalue()


def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(
        base64.urlsafe_b64decode(settings.AUDIT_SIGNING_KEY.encode())
    )


def key_id(private: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return hashlib.sha256(raw).hexdigest()[:16]


def resign(files: dict[str, bytes], private: Ed25519PrivateKey | None = None) -> dict[str, bytes]:
    """Recompute the manifest's file hashes and sign it again (by default with Swrly's key)."""
    private = private or signing_key()
    manifest = json.loads(files["manifest.json"])
    for entry in manifest["files"]:
        if entry["name"] in files:
            entry["sha256"] = hashlib.sha256(files[entry["name"]]).hexdigest()
            entry["bytes"] = len(files[entry["name"]])
    files = dict(files)
    files["manifest.json"] = json.dumps(manifest, indent=2).encode()
    files["manifest.sig"] = json.dumps(
        {
            "algorithm": "Ed25519",
            "key_id": key_id(private),
            "signature": private.sign(files["manifest.json"]).hex(),
        }
    ).encode()
    return files


def lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


def unlines(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()
