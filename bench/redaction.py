"""Benchmark of redaction by value: what searching every encoding of every live key costs.

    .venv/bin/python bench/redaction.py [--keys 2] [--rounds 5]

1. compiling one key's escape-aware patterns (done once per key, the first time a text with an
   escape character is searched), for a realistic key and for the longest one;
2. `redact()` of a 2 KB provider error body, a 100 KB step output and a 1 MB DEBUG page with
   `--keys` live keys, for text with escape characters (the full patterns) and without (the
   literal forms), against `str.replace` of the raw keys alone (redaction before encodings
   were searched);
3. the foreign-key check a provider request makes before it is sent (a 20 KB body).
"""

import argparse
import secrets

from _setup import configure, median_seconds, stop

ESCAPED = "lorem ipsum dolor sit amet, &quot;consectetur&quot; \\u0041 %41 elit "
PLAIN = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
SIZES = (("2 KB error body", 2_000), ("100 KB output", 100_000), ("1 MB page", 1_000_000))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configure()
    from swrly.keys.encodings import KeyMatcher
    from swrly.keys.redaction import foreign_key_in, redact
    from swrly.keys.secret import ProviderSecret

    print("escape-aware patterns, compiled once per key:")
    for length in (108, 512):

        def first_use(length: int = length) -> None:
            key = ("sk-ant-api03-" + secrets.token_urlsafe(400))[:length]
            KeyMatcher(key).found_in("%")

        print(
            f"  {length:4d}-character key   {median_seconds(first_use, args.rounds) * 1000:7.2f} ms"
        )

    held = [ProviderSecret("sk-ant-api03-" + secrets.token_urlsafe(72)) for _ in range(args.keys)]
    values = [secret.reveal() for secret in held]
    redact("warm up %")  # compile the patterns
    print(f"redact() with {args.keys} live keys (median of {args.rounds}):")
    for words in (ESCAPED, PLAIN):
        for label, size in SIZES:
            text = (words * (size // len(words) + 1))[:size]

            def raw_only(text: str = text) -> str:
                for value in values:
                    text = text.replace(value, "[REDACTED]")
                return text

            every = median_seconds(lambda text=text: redact(text), args.rounds)
            baseline = median_seconds(raw_only, args.rounds)
            kind = "with escapes" if words is ESCAPED else "plain"
            print(
                f"  {label + ', ' + kind:30s} {every * 1000:8.2f} ms   "
                f"(raw str.replace {baseline * 1000:6.2f} ms; {size / every / 1e6:6.1f} MB/s)"
            )
    body = (ESCAPED * 400)[:20_000]
    seconds = median_seconds(lambda: foreign_key_in(body, own=held[0]), args.rounds)
    print(f"foreign-key check of a 20 KB request body: {seconds * 1000:.2f} ms")
    for secret in held:
        secret.discard()
    stop()


if __name__ == "__main__":
    main()
