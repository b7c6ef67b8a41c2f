"""Key custody: what Swrly knows about the keys it held (issue 11, "one home per concern").

Customer provider keys by fingerprint (ProviderKey), encryption-key rotations (KeyRotation,
`manage.py rotate-keys`), the key-history page and API, and the per-run key timeline. The
cryptography and the key store are `swrly.keys` (no models); this app records and presents.
It imports tenants and the audit writer, never runs: runs imports it.
"""
