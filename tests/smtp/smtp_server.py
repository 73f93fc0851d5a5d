"""A real SMTP server for the tests: captures every accepted message as one JSON line.

    python3 smtp_server.py --out messages.jsonl [--transient N] [--permanent] [--port P]
                           [--stop-with-stdin]

Listens on 127.0.0.1 on a free port and prints `READY <port>` once it accepts connections;
runs until SIGINT/SIGTERM, so it can be started in the background (`&`). With
`--stop-with-stdin` it also stops when its stdin closes (the tests: it goes with them).
`--transient N` answers the first N messages with 451 (try again later); `--permanent`
answers every message with 550 (mailbox unavailable). Each accepted message is decoded
with Python's email package, so tests see headers and the text and HTML parts as sent.
"""

import argparse
import asyncio
import json
import signal
import sys
from email import message_from_bytes, policy

from aiosmtpd.smtp import SMTP


class Capture:
    def __init__(self, out, transient, permanent):
        self.out = out
        self.transient = transient
        self.permanent = permanent

    async def handle_DATA(self, server, session, envelope):
        if self.permanent:
            return "550 5.1.1 Mailbox unavailable"
        if self.transient > 0:
            self.transient -= 1
            return "451 4.3.0 Try again later"
        message = message_from_bytes(envelope.content, policy=policy.default)
        parts = {}
        for part in message.walk():
            if part.get_content_maintype() == "text":
                parts.setdefault(part.get_content_subtype(), part.get_content())
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(message.get("Subject", "")),
            "headers": {k.lower(): str(v) for k, v in message.items()},
            "content_type": message.get_content_type(),
            "text": parts.get("plain"),
            "html": parts.get("html"),
            "raw": envelope.content.decode("utf-8", "replace"),
        }
        with open(self.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return "250 2.0.0 OK"


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--transient", type=int, default=0)
    parser.add_argument("--permanent", action="store_true")
    # 0: a free port; a test that restarts the server passes the port it had.
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stop-with-stdin", action="store_true")
    args = parser.parse_args()
    handler = Capture(args.out, args.transient, args.permanent)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="smtp.test", auth_require_tls=False),
        "127.0.0.1",
        args.port,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    if args.stop_with_stdin:
        # Stop when the test that started us goes away (stdin closes).
        await loop.run_in_executor(None, sys.stdin.read)
    else:
        # A background job's stdin is /dev/null (or the terminal): serve until signalled.
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
