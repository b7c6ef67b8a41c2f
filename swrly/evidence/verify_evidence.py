#!/usr/bin/env python3
"""Verify a Swrly evidence bundle offline: standard library and `cryptography` only.

    pip install cryptography
    python3 verify_evidence.py swrly-evidence-acme-2026-11-01-2026-11-30.zip \
        --public-keys audit-keys.json

`audit-keys.json` is what GET /api/v1/audit-keys/ answers (fetch it yourself over HTTPS, or keep
a copy from earlier): the published Ed25519 keys. Without it the keys listed inside the bundle
are used and a warning says so, since a forger could list their own key there.

Checks, in order, and each failure is named: the manifest's signature (by a published key), the
SHA-256 and size of every file the manifest lists (and no file it does not list), every
checkpoint's signature and its link to the previous checkpoint's signature, every event's
sequence number and previous-hash link, every version-1 event's SHA-256 (recomputed), every
checkpointed event's hash against its signed checkpoint, and every `audit.checkpoint` event
against the checkpoint it records. Version-2 events are HMAC'd under a key only Swrly holds:
their content is bound to the bundle by the manifest signature, and their hashes to the signed
checkpoints; docs/evidence.md says precisely what that proves.

Prints a short report; exit status 0 when every check passed, 1 when one failed, 2 on usage.

It also computes a key's fingerprint as Swrly records it, to look the key up in a bundle's
provider_keys.json or blocked_keys.json; the key is read from standard input, never an argument:

    python3 verify_evidence.py --fingerprint --salt SALT_HEX --provider anthropic < key.txt
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import io
import json
import sys
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "swrly-evidence"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
EVENTS = "events.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
PUBLIC_KEYS = "public_keys.json"
BLOCKED_KEYS = "blocked_keys.json"
DESTINATIONS = "destinations.json"
GENESIS_HASH = "0" * 64
MAX_LISTED = 20


def key_fingerprint(*, salt: bytes, provider: str, key: str) -> str:
    """A key's v2 fingerprint (swrly/keys/fingerprint.py): "v2:" and the hex HMAC-SHA256, under
    the tenant's fingerprint salt, of the provider name, a NUL byte and the key (UTF-8)."""
    message = (provider + "\0" + key).encode("utf-8")
    return "v2:" + hmac.new(salt, message, hashlib.sha256).hexdigest()


def _fingerprint_command(salt_hex: str | None, provider: str | None) -> int:
    if not salt_hex or not provider:
        print("--fingerprint needs --salt and --provider", file=sys.stderr)
        return 2
    try:
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        salt = b""
    if len(salt) != 32:
        print("--salt: the tenant's fingerprint salt, 64 hex characters", file=sys.stderr)
        return 2
    key = sys.stdin.readline().strip()
    if not key:
        print("no key on standard input", file=sys.stderr)
        return 2
    print(key_fingerprint(salt=salt, provider=provider, key=key))
    return 0


def canonical_json(body: dict[str, Any]) -> bytes:
    """Swrly's canonical JSON: sorted keys, no spaces, ASCII."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def v1_event_hash(event: dict[str, Any]) -> str:
    """The SHA-256 of a version-1 event (swrly/audit/writer.py event_hash)."""
    body = {
        "v": 1,
        "chain": event["chain"],
        "seq": event["seq"],
        "created_at": event["created_at"],
        "actor": event["actor"],
        "actor_user_id": event["actor_user_id"],
        "action": event["action"],
        "target": event["target"],
        "metadata": event["metadata"],
        "ip": event["ip"],
        "user_agent": event["user_agent"],
        "prev_hash": event["prev_hash"],
    }
    return hashlib.sha256(canonical_json(body)).hexdigest()


def checkpoint_payload(checkpoint: dict[str, Any]) -> bytes:
    """The bytes a checkpoint's Ed25519 signature covers (swrly/audit/verifier.py)."""
    return canonical_json(
        {
            "type": "swrly.audit.checkpoint",
            "v": 1,
            "chain": checkpoint["chain"],
            "tenant": checkpoint["tenant"],
            "seq": checkpoint["seq"],
            "head_hash": checkpoint["head_hash"],
            "created_at": checkpoint["created_at"],
            "prev_signature": checkpoint["prev_signature"],
            "key_id": checkpoint["key_id"],
        }
    )


def signing_key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def load_keys(document: Any) -> dict[str, bytes]:
    """key id -> raw Ed25519 public key, from an audit-keys document; the ids are recomputed."""
    keys: dict[str, bytes] = {}
    for entry in document.get("keys", []) if isinstance(document, dict) else []:
        try:
            raw = base64.urlsafe_b64decode(str(entry["public_key"]).encode("ascii"))
            Ed25519PublicKey.from_public_bytes(raw)
        except (KeyError, ValueError, TypeError):
            continue
        keys[signing_key_id(raw)] = raw
    return keys


def signature_ok(keys: dict[str, bytes], key_id: str, payload: bytes, signature: str) -> str:
    """'' when `signature` (hex) is `key_id`'s signature of `payload`; otherwise why not."""
    raw = keys.get(key_id)
    if raw is None:
        return f"signed by key {key_id!r}, which is not a published key"
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(bytes.fromhex(signature), payload)
    except (InvalidSignature, ValueError, TypeError):
        return f"the signature by key {key_id} does not verify"
    return ""


class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.notes: list[str] = []

    def fail(self, message: str) -> None:
        self.failures.append(message)


def _jsonl(lines: Iterable[str], name: str, report: Report) -> Iterator[dict[str, Any]]:
    """One JSON object per line, read as it streams (a bundle may hold millions of events)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            report.fail(f"{name} line {number}: not JSON")
            continue
        if not isinstance(row, dict):
            report.fail(f"{name} line {number}: not a JSON object")
            continue
        yield row


def _sha256(bundle: zipfile.ZipFile, name: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with bundle.open(name) as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def check_manifest(
    bundle: zipfile.ZipFile, keys: dict[str, bytes] | None, report: Report
) -> tuple[dict[str, Any], dict[str, bytes], dict[str, bytes]]:
    """The manifest, the keys in use and the files it lists (name -> bytes, verified)."""
    names = set(bundle.namelist())
    for needed in (MANIFEST, SIGNATURE):
        if needed not in names:
            report.fail(f"{needed} is missing from the bundle")
            return {}, {}, {}
    manifest_bytes = bundle.read(MANIFEST)
    try:
        manifest = json.loads(manifest_bytes)
        signature = json.loads(bundle.read(SIGNATURE))
    except ValueError:
        report.fail("the manifest or its signature is not JSON")
        return {}, {}, {}
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        report.fail(f"the manifest is not a {FORMAT} manifest")
        return {}, {}, {}
    files: dict[str, bytes] = {}
    listed = manifest.get("files", [])
    for entry in listed:
        name = entry.get("name")
        if name not in names:
            report.fail(f"file {name}: listed in the manifest but missing from the bundle")
            continue
        digest, size = _sha256(bundle, name)
        if digest != entry.get("sha256") or size != entry.get("bytes"):
            report.fail(f"file {name}: its SHA-256 does not match the manifest (altered)")
        files[name] = b"" if name == EVENTS else bundle.read(name)
    unlisted = names - {entry.get("name") for entry in listed} - {MANIFEST, SIGNATURE}
    for name in sorted(unlisted):
        report.fail(f"file {name}: in the bundle but not listed in the manifest (added)")
    if keys is None:
        try:
            keys = load_keys(json.loads(files.get(PUBLIC_KEYS, b"{}")))
        except ValueError:
            keys = {}
        report.notes.append(
            "WARNING: keys taken from the bundle itself; pass --public-keys with the keys "
            "published at /api/v1/audit-keys/ (or compare these key ids with them): "
            + ", ".join(sorted(keys))
        )
    problem = signature_ok(
        keys,
        str(signature.get("key_id", "")) if isinstance(signature, dict) else "",
        manifest_bytes,
        str(signature.get("signature", "")) if isinstance(signature, dict) else "",
    )
    if problem:
        report.failures.insert(0, f"manifest signature: {problem}")
    return manifest, keys, files


def check_checkpoints(
    checkpoints: list[dict[str, Any]],
    manifest: dict[str, Any],
    keys: dict[str, bytes],
    report: Report,
) -> None:
    previous: dict[str, Any] | None = None
    for checkpoint in checkpoints:
        seq = checkpoint.get("seq")
        where = f"checkpoint at #{seq}"
        try:
            payload = checkpoint_payload(checkpoint)
        except KeyError as missing:
            report.fail(f"{where}: field {missing} is missing")
            previous = checkpoint
            continue
        if checkpoint["chain"] != manifest.get("chain"):
            report.fail(f"{where}: belongs to chain {checkpoint['chain']}, not this tenant's")
        problem = signature_ok(
            keys, str(checkpoint["key_id"]), payload, str(checkpoint.get("signature", ""))
        )
        if problem:
            report.fail(f"{where}: {problem} (the checkpoint was altered or forged)")
        if previous is not None:
            if not isinstance(seq, int) or seq <= previous.get("seq", 0):
                report.fail(f"{where}: out of order after the checkpoint at #{previous.get('seq')}")
            elif checkpoint["prev_signature"] != previous.get("signature"):
                report.fail(
                    f"{where}: does not chain the previous checkpoint's signature (a checkpoint "
                    "was removed, replaced or inserted)"
                )
        previous = checkpoint


def check_events(
    events: Iterable[dict[str, Any]],
    checkpoints: list[dict[str, Any]],
    manifest: dict[str, Any],
    report: Report,
) -> dict[str, Any]:
    """Every event in order, keeping only the previous one (constant memory)."""
    by_seq = {c.get("seq"): c for c in checkpoints}
    counts: dict[str, Any] = {
        "events": 0,
        "first_seq": None,
        "last_seq": None,
        "keyed": 0,
        "recomputed": 0,
        "linked": 0,
        "anchored": 0,
    }
    previous: dict[str, Any] | None = None
    for event in events:
        seq = event.get("seq")
        counts["events"] += 1
        counts["first_seq"] = seq if previous is None else counts["first_seq"]
        counts["last_seq"] = seq
        counts["keyed"] += event.get("hash_version") == 2
        where = f"event #{seq}"
        if event.get("chain") != manifest.get("chain"):
            report.fail(f"{where}: belongs to chain {event.get('chain')}, not this tenant's")
        if previous is not None:
            expected = previous.get("seq", 0) + 1
            if seq != expected:
                report.fail(
                    f"{where}: sequence gap or reordering: expected #{expected} after "
                    f"#{previous.get('seq')} (an event was dropped, inserted or moved)"
                )
            elif event.get("prev_hash") != previous.get("hash"):
                report.fail(f"{where}: its previous-hash link does not match event #{expected - 1}")
            else:
                counts["linked"] += 1
            if event.get("hash_version") == 1 and previous.get("hash_version", 1) > 1:
                report.fail(f"{where}: a version 1 (unkeyed) event after keyed events")
        elif seq == 1 and event.get("prev_hash") != GENESIS_HASH:
            report.fail(f"{where}: the first event of the chain does not start from genesis")
        if event.get("hash_version") == 1:
            try:
                recomputed = v1_event_hash(event)
            except KeyError as missing:
                report.fail(f"{where}: field {missing} is missing")
            else:
                if recomputed != event.get("hash"):
                    report.fail(f"{where}: content does not match its SHA-256 (altered)")
                else:
                    counts["recomputed"] += 1
        elif event.get("hash_version") != 2:
            report.fail(f"{where}: unknown hash version {event.get('hash_version')!r}")
        checkpoint = by_seq.get(seq)
        if checkpoint is not None:
            if checkpoint.get("head_hash") != event.get("hash"):
                report.fail(
                    f"{where}: its hash is not the one the checkpoint at #{seq} signed "
                    "(the event was altered or replaced)"
                )
            else:
                counts["anchored"] += 1
        if event.get("action") == "audit.checkpoint":
            meta = event.get("metadata") or {}
            recorded = by_seq.get(meta.get("seq"))
            if recorded is None or recorded.get("signature") != meta.get("signature"):
                report.fail(
                    f"{where}: records a checkpoint at #{meta.get('seq')} that is missing from "
                    "the bundle or was replaced"
                )
        previous = event
    summary = manifest.get("events", {})
    if counts["events"] and (
        counts["first_seq"] != summary.get("first_seq")
        or counts["last_seq"] != summary.get("last_seq")
    ):
        report.fail(
            f"events.jsonl: holds events #{counts['first_seq']} to #{counts['last_seq']} "
            f"but the manifest says #{summary.get('first_seq')} to #{summary.get('last_seq')} "
            "(events were cut from an end)"
        )
    if counts["events"] != summary.get("count", counts["events"]):
        report.fail(
            f"events.jsonl: holds {counts['events']} events but the manifest says "
            f"{summary.get('count')}"
        )
    return counts


def verify(path: str, public_keys: dict[str, bytes] | None) -> tuple[Report, dict[str, Any]]:
    report = Report()
    facts: dict[str, Any] = {}
    try:
        bundle = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        report.fail(f"cannot read the bundle: {exc}")
        return report, facts
    with bundle:
        manifest, keys, files = check_manifest(bundle, public_keys, report)
        if not manifest:
            return report, facts
        checkpoints = list(
            _jsonl(files.get(CHECKPOINTS, b"").decode("utf-8").splitlines(), CHECKPOINTS, report)
        )
        check_checkpoints(checkpoints, manifest, keys, report)
        if EVENTS in files:
            with bundle.open(EVENTS) as raw, io.TextIOWrapper(raw, encoding="utf-8") as lines:
                counts = check_events(_jsonl(lines, EVENTS, report), checkpoints, manifest, report)
        else:
            counts = check_events([], checkpoints, manifest, report)
        server = manifest.get("server_check", {})
        if server.get("events_mismatched"):
            report.fail(
                "Swrly's check at export: events whose content does not recompute to their "
                f"hash with the chain key: {server['events_mismatched']}"
            )
        if server.get("chain_ok") is False:
            report.fail(
                f"Swrly's check at export: the chain is broken: {server.get('chain_reason')}"
            )
    facts = {
        "manifest": manifest,
        "blocked_keys": _json_list(files.get(BLOCKED_KEYS)),
        "destinations": _json_dict(files.get(DESTINATIONS)).get("destinations", []),
        "checkpoints": checkpoints,
        "counts": counts,
    }
    return report, facts


def _json_list(data: bytes | None) -> list[Any]:
    try:
        body = json.loads(data) if data else []
    except ValueError:
        return []
    return body if isinstance(body, list) else []


def _json_dict(data: bytes | None) -> dict[str, Any]:
    try:
        body = json.loads(data) if data else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _print_report(report: Report, facts: dict[str, Any]) -> None:
    manifest = facts.get("manifest", {})
    checkpoints = facts.get("checkpoints", [])
    counts = facts.get("counts", {})
    if manifest:
        tenant = manifest.get("tenant", {})
        period = manifest.get("period", {})
        print(f"Tenant: {tenant.get('slug')} ({tenant.get('id')})")
        print(f"Period: {period.get('from')} to {period.get('to')} (UTC, inclusive)")
        print(f"Exported: {manifest.get('generated_at')} by {manifest.get('generated_by')}")
    first, last = counts.get("first_seq"), counts.get("last_seq")
    if counts.get("events") and isinstance(first, int) and isinstance(last, int):
        print(
            f"Events: {counts['events']}, #{first} to #{last}; "
            f"{counts.get('recomputed', 0)} version-1 hashes recomputed, "
            f"{counts.get('linked', 0)} links checked, "
            f"{counts.get('anchored', 0)} matched a signed checkpoint"
        )
        if counts.get("keyed"):
            check = manifest.get("server_check", {})
            print(
                f"  {counts['keyed']} version-2 events are HMAC'd under Swrly's chain key: not "
                f"recomputable here; Swrly recomputed {check.get('events_recomputed')} at export, "
                f"mismatched: {check.get('events_mismatched') or 'none'} (a claim signed with "
                "the manifest)"
            )
        if first != 1:
            print(f"  event #{first} links to #{first - 1}, before the period (not in this bundle)")
        anchored = [c.get("seq") for c in checkpoints if isinstance(c.get("seq"), int)]
        inside = [seq for seq in anchored if first <= seq <= last]
        if inside and inside[-1] < last:
            print(
                f"  events after #{inside[-1]} are linked but not yet covered by a checkpoint "
                "in this bundle"
            )
        elif not inside:
            print("  no checkpoint in this bundle signs an event of the period")
    elif manifest:
        print("Events: none in the period")
    if checkpoints:
        key_ids = sorted({str(c.get("key_id")) for c in checkpoints})
        print(
            f"Checkpoints: {len(checkpoints)}, at #{checkpoints[0].get('seq')} to "
            f"#{checkpoints[-1].get('seq')}, signed by {', '.join(key_ids)}"
        )
    for entry in facts.get("destinations", []):
        if isinstance(entry, dict):
            print(
                f"Sent to: {entry.get('provider')} at {entry.get('destination')}: "
                f"{entry.get('requests')} request(s) in {entry.get('steps')} step(s)"
            )
    blocked = facts.get("blocked_keys", [])
    if blocked:
        print(f"Blocked keys: {len(blocked)} (blocked_keys.json)")
    for note in report.notes:
        print(note)
    if report.failures:
        print(f"FAILED: {len(report.failures)} problem(s). First failure: {report.failures[0]}")
        for failure in report.failures[:MAX_LISTED]:
            print(f"  - {failure}")
        if len(report.failures) > MAX_LISTED:
            print(f"  … and {len(report.failures) - MAX_LISTED} more")
    else:
        print(
            "OK: the manifest signature, every file hash, every event link and every "
            "checkpoint signature verified."
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify a Swrly evidence bundle offline.")
    parser.add_argument("bundle", nargs="?", help="the .zip file")
    parser.add_argument(
        "--public-keys",
        help="JSON answer of GET /api/v1/audit-keys/ (the published signing keys)",
    )
    parser.add_argument(
        "--fingerprint",
        action="store_true",
        help="instead of verifying: print the v2 fingerprint of the key read from stdin",
    )
    parser.add_argument("--salt", help="with --fingerprint: the tenant's fingerprint salt (hex)")
    parser.add_argument("--provider", help="with --fingerprint: the provider, e.g. anthropic")
    args = parser.parse_args(argv)
    if args.fingerprint:
        return _fingerprint_command(args.salt, args.provider)
    if not args.bundle:
        parser.error("the bundle is required (or --fingerprint)")
    keys = None
    if args.public_keys:
        try:
            with open(args.public_keys, encoding="utf-8") as handle:
                keys = load_keys(json.load(handle))
        except (OSError, ValueError) as exc:
            print(f"cannot read the public keys: {exc}", file=sys.stderr)
            return 2
        if not keys:
            print("no Ed25519 key in the public keys file", file=sys.stderr)
            return 2
    report, facts = verify(args.bundle, keys)
    _print_report(report, facts)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
