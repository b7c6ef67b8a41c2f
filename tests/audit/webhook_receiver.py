"""A real audit-webhook receiver on loopback: an http.server in a thread that fails on purpose.

`receiver.plan` is a list of what to do with the next requests ("ok", "500", "slow", "redirect");
when it is empty every request is answered 204. `stop()` takes it down (connections are then
refused) and `start()` brings it back on the same port. It checks each delivery's signature the
way docs/security.md tells a customer to, with the secret it was given.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    answered: str

    @property
    def payload(self) -> dict:
        return json.loads(self.body)

    @property
    def seqs(self) -> list[int]:
        return [event["seq"] for event in self.payload["events"]]


def signature_ok(secret: str, header: str, body: bytes) -> bool:
    """The receiver's check: HMAC-SHA256 of "<t>." + body under the secret, constant time."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    expected = hmac.new(
        secret.encode(), parts.get("t", "").encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass
class Receiver:
    port: int = 0
    plan: list[str] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    slow_seconds: float = 1.5
    redirect_to: str = "http://127.0.0.1:9/elsewhere"
    tls: ssl.SSLContext | None = None  # serve HTTPS with this context
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/siem/ingest"

    def _next(self) -> str:
        with self._lock:
            return self.plan.pop(0) if self.plan else "ok"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                what = receiver._next()
                with receiver._lock:
                    receiver.deliveries.append(Delivery(dict(self.headers), body, what))
                if what == "slow":
                    time.sleep(receiver.slow_seconds)
                    status = 204
                elif what == "500":
                    status = 500
                elif what == "redirect":
                    self.send_response(307)
                    self.send_header("Location", receiver.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                else:
                    status = 204
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the client gave up waiting
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def acknowledged(self) -> list[Delivery]:
        """Deliveries the receiver answered 2xx (a slow one may have been given up on)."""
        return [d for d in self.deliveries if d.answered in ("ok", "slow")]

    def seqs_received(self) -> list[int]:
        """Every event seq received, de-duplicated as a receiver would, in arrival order."""
        seen: list[int] = []
        for delivery in self.deliveries:
            if delivery.answered not in ("ok", "slow"):
                continue
            seen.extend(seq for seq in delivery.seqs if seq not in seen)
        return seen


def certificate_authority(tmp_path, host: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context for `host`, client context trusting only its CA): a CA made for the test."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def build(subject, issuer, public_key, signing_key, *, ca: bool, san=None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
            )
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swrly test CA")])
    ca_cert = build(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = build(name, ca_name, key.public_key(), ca_key, ca=False, san=host)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (tmp_path / "server.pem").write_bytes(
        cert.public_bytes(pem)
        + key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "server.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    return server, client
