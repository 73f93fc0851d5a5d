"""An SMTP sink for the benchmarks: accepts every message and appends its recipients as one
line to a file, flushed every 50 ms. No parsing, so the sink is not what gets measured.

    python3 bench_sink.py --out recipients.txt

Listens on 127.0.0.1 on a free port, prints `READY <port>`, and stops when stdin closes.
"""

import argparse
import asyncio
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, out):
        self.out = out

    async def handle_DATA(self, server, session, envelope):
        self.out.write(",".join(envelope.rcpt_tos) + "\n")
        return "250 2.0.0 OK"


async def flush_forever(out):
    while True:
        await asyncio.sleep(0.05)
        out.flush()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = open(args.out, "a", encoding="utf-8")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Sink(out), hostname="bench.sink", auth_require_tls=False),
        "127.0.0.1",
        0,
    )
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    flusher = asyncio.ensure_future(flush_forever(out))
    await loop.run_in_executor(None, sys.stdin.read)
    flusher.cancel()
    out.flush()


if __name__ == "__main__":
    asyncio.run(main())
