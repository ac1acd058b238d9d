"""The nats-py side of the NATSBenchmark comparison.

Run by the Swift `NATSBenchmark` executable with the venv's python, one process per scenario and
round, against the nats-server that executable started. Each mode connects, warms up, measures,
and prints exactly one JSON line on stdout. Timing is taken inside this process with
time.perf_counter_ns, from just before the first measured operation, so Python start-up and the
connect are not counted (the Swift side measures the same way).

Modes:
  pub        N publishes of SIZE bytes to SUBJECT, then one flush (PING/PONG): the server has
             received everything when the clock stops.  -> {"elapsed_ns": ..., "count": N}
  rtt        N sequential flushes (PING/PONG round trips), each timed.  -> {"samples_ns": [...]}
  req        N sequential requests of SIZE bytes, each timed.  -> {"samples_ns": [...]}
  kv         N puts then N gets of SIZE-byte values on an existing bucket, each timed.
             -> {"put_ns": [...], "get_ns": [...]}
  responder  answers every request on SUBJECT with its own payload; prints "ready" once the
             subscription is registered with the server, runs until killed or stdin closes.

The event loop is plain asyncio (nats-py's default), not uvloop.
"""

import argparse
import asyncio
import json
import sys
import time

import nats


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["pub", "rtt", "req", "kv", "responder"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--subject", default="bench.subject")
    parser.add_argument("--bucket", default="bench")
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--keys", type=int, default=64)
    return parser.parse_args()


async def connect(url):
    # No reconnects: a benchmark that silently reconnects would measure the wrong thing.
    return await nats.connect(servers=[url], allow_reconnect=False, name="nats-py-bench")


async def run_pub(args):
    nc = await connect(args.url)
    payload = b"x" * args.size
    subject = args.subject
    for _ in range(args.warmup):
        await nc.publish(subject, payload)
    await nc.flush(timeout=30)
    start = time.perf_counter_ns()
    for _ in range(args.count):
        await nc.publish(subject, payload)
    await nc.flush(timeout=60)
    elapsed = time.perf_counter_ns() - start
    await nc.close()
    return {"elapsed_ns": elapsed, "count": args.count}


async def run_rtt(args):
    nc = await connect(args.url)
    for _ in range(args.warmup):
        await nc.flush(timeout=5)
    samples = [0] * args.count
    clock = time.perf_counter_ns
    for i in range(args.count):
        t0 = clock()
        await nc.flush(timeout=5)
        samples[i] = clock() - t0
    await nc.close()
    return {"samples_ns": samples}


async def run_req(args):
    nc = await connect(args.url)
    payload = b"x" * args.size
    subject = args.subject
    for _ in range(args.warmup):
        await nc.request(subject, payload, timeout=5)
    samples = [0] * args.count
    clock = time.perf_counter_ns
    for i in range(args.count):
        t0 = clock()
        await nc.request(subject, payload, timeout=5)
        samples[i] = clock() - t0
    await nc.close()
    return {"samples_ns": samples}


async def run_kv(args):
    nc = await connect(args.url)
    js = nc.jetstream()
    kv = await js.key_value(args.bucket)
    value = b"v" * args.size
    keys = [f"py{i}" for i in range(args.keys)]
    for i in range(args.warmup):
        await kv.put(keys[i % len(keys)], value)
        await kv.get(keys[i % len(keys)])
    clock = time.perf_counter_ns
    puts = [0] * args.count
    for i in range(args.count):
        t0 = clock()
        await kv.put(keys[i % len(keys)], value)
        puts[i] = clock() - t0
    gets = [0] * args.count
    for i in range(args.count):
        t0 = clock()
        entry = await kv.get(keys[i % len(keys)])
        gets[i] = clock() - t0
        if entry.value != value:
            raise RuntimeError(f"kv get returned the wrong value for {keys[i % len(keys)]}")
    await nc.close()
    return {"put_ns": puts, "get_ns": gets}


async def run_responder(args):
    nc = await connect(args.url)

    async def answer(msg):
        await nc.publish(msg.reply, msg.data)

    await nc.subscribe(args.subject, cb=answer)
    await nc.flush(timeout=10)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    # Stop when the parent closes our stdin (or kills us).
    await loop.run_in_executor(None, sys.stdin.read)
    await nc.close()
    return None


async def main():
    args = parse_args()
    runner = {"pub": run_pub, "rtt": run_rtt, "req": run_req, "kv": run_kv, "responder": run_responder}[args.mode]
    result = await runner(args)
    if result is not None:
        print(json.dumps(result, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
