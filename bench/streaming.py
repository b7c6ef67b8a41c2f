"""Benchmark of streamed steps: what reading an answer as events costs against reading it whole.

    .venv/bin/python bench/streaming.py [--words 2000] [--calls 200] [--rounds 5]

1. parsing only: one answer of `--words` words, as the Messages event stream and as Chat
   Completions chunks (the sandbox's own event bytes, one event a word, in 4 KB chunks), through
   `sse_lines`, `sse_events` and each API's stream reader, against `json.loads` and
   `parse_answer` of the same answer whole (the baseline);
2. what a progress write shows (`shown_so_far`) of 100,000 characters of words and of one run
   without whitespace before a last word, and, for an 8,000-character run, the regex it replaced
   (the peer: quadratic there);
3. end to end: `--calls` calls to a real sandbox server on loopback through `call_provider`,
   streamed and whole, and the same streamed request sent by a bare httpx client that only
   reads the lines (the peer: what the sandbox and HTTP cost without Swrly), rounds alternated,
   with the time to first text of the streamed ones.
Figures are medians of `--rounds`; ratios are streamed / whole, measured in the same run.
"""

import argparse
import json
import re
import statistics
import time

import httpx
from _setup import configure, median_seconds, stop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--words", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configure()
    from django.conf import settings

    from runs.executor import shown_so_far
    from runs.providers import ModelCall, call_provider
    from runs.providers.anthropic import ANTHROPIC
    from runs.providers.client import sse_events, sse_lines
    from runs.providers.openai import OPENAI
    from swrly.dev.sandbox import SandboxServer, _Answer
    from swrly.keys.secret import ProviderSecret

    text = " ".join(f"word{i}" for i in range(args.words))
    answer = _Answer(1, "m", text, False, 10, args.words)
    shapes = {
        "anthropic": (
            ANTHROPIC,
            b"".join(event for event, _ in answer.anthropic_events()),
            answer.anthropic(),
        ),
        "openai": (
            OPENAI,
            b"".join(event for event, _ in answer.openai_events(include_usage=True)),
            answer.openai(),
        ),
    }
    print(f"parsing one {args.words}-word answer (median of {args.rounds}):")
    for name, (protocol, events, whole) in shapes.items():
        decoded = events.decode()
        chunks = [decoded[i : i + 4096] for i in range(0, len(decoded), 4096)]  # as it arrives
        body = json.dumps(whole)

        def streamed(protocol=protocol, chunks=chunks) -> None:
            reader = protocol.stream_reader()
            for event, data in sse_events(sse_lines(chunks)):
                reader.read(event, data)
            if reader.answer().text != text:
                raise SystemExit("the streamed answer differs from the whole one")

        def at_once(protocol=protocol, body=body) -> None:
            if protocol.parse_answer(json.loads(body)).text != text:
                raise SystemExit("the whole answer was not read back")

        s, w = median_seconds(streamed, args.rounds), median_seconds(at_once, args.rounds)
        print(
            f"  {name:9s} events {s * 1000:8.2f} ms   whole {w * 1000:6.2f} ms   "
            f"ratio {s / w:6.1f}x   {s / args.words * 1e6:5.1f} µs a word"
        )

    # What a progress write shows: the text so far without its last word, redacted. The regex it
    # replaced (`\S*\Z` substituted away) backtracked: quadratic in a run without whitespace.
    unbroken = "x" * 8_000 + " then"  # a long run without whitespace, then a last word
    print(f"the text so far as shown (median of {args.rounds}):")
    for label, text in (
        ("100,000 chars of words", "word " * 20_000),
        ("100,000 chars without whitespace", "x" * 100_000 + " then"),
        ("8,000 chars without whitespace", unbroken),
    ):
        took = median_seconds(lambda text=text: shown_so_far(text), args.rounds)
        print(f"  {label:34s} {took * 1000:8.2f} ms")
    old = re.compile(r"\S*\Z")
    took = median_seconds(lambda: old.sub("", unbroken), args.rounds)
    print(f"  {'8,000 chars, the old regex':34s} {took * 1000:8.2f} ms")

    server = SandboxServer().start()
    settings.DEBUG = True  # plain http on loopback
    settings.PROVIDER_BASE_URLS = {"anthropic": server.url, "openai": server.url}
    secret = ProviderSecret("sk-sandbox-bench-0123456789abcdef")
    bare = httpx.Client()
    prompt = "Summarise the incident report for the security team"
    print(f"end to end, {args.calls} calls a round to the sandbox (median of {args.rounds}):")
    try:
        for name in ("anthropic", "openai"):
            protocol = ANTHROPIC if name == "anthropic" else OPENAI
            streamed_call = ModelCall(model="m", prompt=prompt, max_tokens=64, stream=True)
            url = server.url + protocol.wire.path
            raw_body = json.dumps(protocol.build_body(streamed_call))
            raw_headers = {
                "content-type": "application/json",
                **protocol.wire.auth_headers(secret.reveal()),
            }
            seconds: dict[str, list[float]] = {"streamed": [], "whole": [], "bare": []}
            first_text: list[int] = []
            for _ in range(args.rounds):
                for kind in seconds:  # alternated, each round
                    started = time.perf_counter()
                    for _ in range(args.calls):
                        if kind == "bare":
                            with bare.stream(
                                "POST", url, content=raw_body, headers=raw_headers
                            ) as r:
                                for _line in r.iter_lines():
                                    pass
                            continue
                        call = (
                            streamed_call
                            if kind == "streamed"
                            else ModelCall(model="m", prompt=prompt, max_tokens=64)
                        )
                        result = call_provider(name, secret=secret, call=call)
                        if kind == "streamed":
                            first_text.append(result.ttft_ms)
                    seconds[kind].append(time.perf_counter() - started)
            s, w, b = (statistics.median(seconds[kind]) / args.calls for kind in seconds)
            print(
                f"  {name:9s} streamed {s * 1000:5.2f} ms   whole {w * 1000:5.2f} ms   "
                f"bare httpx stream {b * 1000:5.2f} ms   streamed/whole {s / w:4.2f}x   "
                f"streamed/bare {s / b:4.2f}x   "
                f"first text median {statistics.median(first_text)} ms"
            )
    finally:
        secret.discard()
        bare.close()
        server.stop()
        stop()


if __name__ == "__main__":
    main()
