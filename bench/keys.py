"""Benchmark of the BYOK key service against raw Redis on the same server, in the same run.

    .venv/bin/python bench/keys.py [--pairs 20000] [--tokens 100000] [--rounds 5]

1. deposit + consume pairs per second on one connection, against raw redis-py `SET … EX NX`
   + `GETDEL` of values of the same size (target: ratio ≥ 0.9, issue 13);
2. `rotate-keys` rewrap throughput for N live tokens, against a raw loop that does the same
   Redis work (SCAN, pipelined GET, pipelined compare-and-swap script) without the crypto
   (target: ratio ≥ 0.8).
The two sides alternate round by round, so drift in the machine affects both alike.

It starts its own embedded Valkey unless REDIS_URL is set. With REDIS_URL it FLUSHES the
database the URL names (use a spare database number, e.g. redis://127.0.0.1:6379/5).
"""

import argparse
import time
import uuid

from _setup import best_rate, configure, stop

KEY = "sk-ant-api03-" + "b" * 80 + "ENCH"  # a realistic length; not a real key


def bench_pairs(pairs: int, rounds: int) -> None:
    from swrly import keys
    from swrly.keys.keyring import get_keyring
    from swrly.keys.store import get_client, redis_key
    from swrly.keys.tokens import seal

    client = get_client()
    tenant = str(uuid.uuid4())
    runs = [str(uuid.uuid4()) for _ in range(pairs)]
    sample = seal(
        get_keyring(), tenant_id=tenant, run_id=runs[0], provider="anthropic", plaintext=KEY
    )
    value = b"x" * len(sample)
    names = [redis_key(tenant_id=tenant, run_id=run, provider="anthropic") for run in runs]

    def service() -> int:
        for run in runs:
            keys.deposit(tenant_id=tenant, run_id=run, provider="anthropic", key=KEY)
            keys.consume(tenant_id=tenant, run_id=run, provider="anthropic").discard()
        return pairs

    def raw() -> int:
        for name in names:
            client.set(name, value, ex=900, nx=True)
            client.getdel(name)
        return pairs

    service(), raw()  # warm up connections and caches
    service_rates, raw_rates, service_cpu, raw_cpu = [], [], [], []
    for _ in range(rounds):
        cpu = time.process_time()
        service_rates.append(best_rate(service, 1)[0])
        service_cpu.append((time.process_time() - cpu) / pairs)
        cpu = time.process_time()
        raw_rates.append(best_rate(raw, 1)[0])
        raw_cpu.append((time.process_time() - cpu) / pairs)
    s, r = max(service_rates), max(raw_rates)
    own_cpu = (min(service_cpu) - min(raw_cpu)) * 1e6
    print(f"deposit+consume, one connection, {pairs} pairs x {rounds} rounds (best round):")
    print(f"  key service   {s:10,.0f} pairs/s   ({1e6 / s:6.1f} µs per pair)")
    print(f"  raw redis-py  {r:10,.0f} pairs/s   ({1e6 / r:6.1f} µs per pair)")
    print(f"  ratio         {s / r:10.2f}   (target ≥ 0.9)")
    print(
        f"  the key service's own CPU time: {own_cpu:.1f} µs per pair (process CPU, service - raw)"
    )


def bench_rewrap(tokens: int, rounds: int) -> None:
    from django.conf import settings

    from swrly.keys.keyring import generate_key, get_keyring
    from swrly.keys.rotation import (
        BATCH_SIZE,
        COMPARE_AND_SWAP,
        _batches,
        _read,
        rewrap_live_tokens,
    )
    from swrly.keys.store import get_client, redis_key
    from swrly.keys.tokens import seal

    client = get_client()
    swap = client.register_script(COMPARE_AND_SWAP)
    tenant = str(uuid.uuid4())
    runs = [str(uuid.uuid4()) for _ in range(tokens)]
    names = [redis_key(tenant_id=tenant, run_id=run, provider="openai") for run in runs]

    def fill_under_old_key() -> None:
        client.flushdb()
        settings.BYOK_ENCRYPTION_KEY = old
        settings.BYOK_ENCRYPTION_KEY_FALLBACKS = []
        ring = get_keyring()
        pipe = client.pipeline(transaction=False)
        for run, name in zip(runs, names, strict=True):
            pipe.set(
                name,
                seal(ring, tenant_id=tenant, run_id=run, provider="openai", plaintext=KEY),
                ex=900,
            )
            if len(pipe) >= BATCH_SIZE:
                pipe.execute()
        pipe.execute()
        settings.BYOK_ENCRYPTION_KEY = new
        settings.BYOK_ENCRYPTION_KEY_FALLBACKS = [old]

    old, new = generate_key(), generate_key()
    fill_under_old_key()
    size = len(client.get(names[0]))
    replacement = b"y" * size

    def service() -> int:
        report = rewrap_live_tokens()
        if report.rewrapped != tokens or report.failed:
            raise SystemExit(f"rewrap went wrong: {report}")
        return tokens

    def raw() -> int:
        done = 0
        for batch in _batches(client, BATCH_SIZE):
            values = _read(client, batch)
            pipe = client.pipeline(transaction=False)
            for name, value in zip(batch, values, strict=True):
                swap(keys=[name], args=[value, replacement], client=pipe)
            done += sum(1 for result in pipe.execute() if result == 1)
        return done

    service_rates, raw_rates = [], []
    for _ in range(rounds):
        fill_under_old_key()
        service_rates.append(best_rate(service, 1)[0])
        fill_under_old_key()
        raw_rates.append(best_rate(raw, 1)[0])
    client.flushdb()
    s, r = max(service_rates), max(raw_rates)
    print(f"rotate-keys rewrap of {tokens:,} live tokens x {rounds} rounds (best round):")
    print(f"  rewrap_live_tokens  {s:10,.0f} tokens/s   ({tokens / s:6.2f} s in all)")
    print(f"  raw CAS loop        {r:10,.0f} tokens/s   ({tokens / r:6.2f} s in all)")
    print(f"  ratio               {s / r:10.2f}   (target ≥ 0.8)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = configure()
    print(f"Redis: {url}")
    try:
        bench_pairs(args.pairs, args.rounds)
        bench_rewrap(args.tokens, max(1, args.rounds // 2))
    finally:
        stop()


if __name__ == "__main__":
    main()
