#!/usr/bin/env python3
"""Python `websockets` as an interop peer for duplex (run by interop/run.sh).

client: connect to `duplex echo`, send every test payload (text and binary,
        sizes 0 B to 16 MiB), check each echo byte for byte, check whether
        permessage-deflate was negotiated, close with 1000 and check that the
        server answered 1000.
server: accept one connection from `duplex connect` and either
        drive  - send every test payload to the client (run with --echo),
                 check each echo, close with 1000 and check the reply code; or
        echo   - echo every message (pipe-mode test) and check that the
                 client closes with 1000.
        Prints `listening on 127.0.0.1:PORT` once bound.

Each check prints one line, `PASS <label>: <check>` or
`FAIL <label>: <check>: <why>`; every planned check is printed exactly once,
so the counts do not depend on where a run stops.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import ssl
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20]
KINDS = ["text", "binary"]
MAX_SIZE = 64 << 20
STEP_TIMEOUT = 60.0

# A text block with 1-, 2-, 3- and 4-byte UTF-8 sequences; repeated and cut at
# a character boundary to reach an exact byte length.
_TEXT_BLOCK = (
    "duplex interop: a-z 0123456789 caf\u00e9 na\u00efve \u00fcber "
    "\u20ac \u2603 \u65e5\u672c\u8a9e \U0001f600 \U0001d11e \u0416\u0438\u0437\u043d\u044c\n"
).encode()


def text_payload(size: int) -> str:
    reps = size // len(_TEXT_BLOCK) + 1
    cut = (_TEXT_BLOCK * reps)[:size].decode("utf-8", errors="ignore")
    cut += "x" * (size - len(cut.encode()))
    return cut


def binary_payload(size: int) -> bytes:
    # Half incompressible, half repetitive, so deflate sees both.
    rnd = random.Random(size)
    half = size // 2
    pattern = b"duplex\x00\xff\x01\x80"
    return rnd.randbytes(size - half) + (pattern * (half // len(pattern) + 1))[:half]


def payloads():
    for kind in KINDS:
        for size in SIZES:
            yield kind, size, (text_payload(size) if kind == "text" else binary_payload(size))


def first_difference(a: bytes, b: bytes) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at byte {i}"
    return f"length {len(b)} instead of {len(a)}"


class Report:
    def __init__(self, label: str, planned: list[str]):
        self.label = label
        self.pending = list(planned)
        self.failed = 0

    def result(self, check: str, ok: bool, why: str = "") -> None:
        if check in self.pending:
            self.pending.remove(check)
        if ok:
            print(f"PASS {self.label}: {check}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {self.label}: {check}: {why}", flush=True)

    def finish(self, why: str) -> int:
        for check in list(self.pending):
            self.result(check, False, why)
        return 1 if self.failed else 0


def payload_check(kind: str, size: int) -> str:
    return f"{kind} {size} B echoed"


def planned_checks(mode: str) -> list[str]:
    if mode == "echo":
        return ["permessage-deflate negotiation", "client closed with 1000"]
    checks = ["permessage-deflate negotiation"]
    checks += [payload_check(k, s) for k in KINDS for s in SIZES]
    checks.append("close handshake answered with 1000")
    return checks


def check_echo(report: Report, kind: str, size: int, sent, got) -> None:
    check = payload_check(kind, size)
    want_type = str if kind == "text" else bytes
    if not isinstance(got, want_type):
        report.result(check, False, f"got a {type(got).__name__} message, expected {want_type.__name__}")
        return
    a = sent.encode() if kind == "text" else sent
    b = got.encode() if kind == "text" else got
    report.result(check, a == b, first_difference(a, b) if a != b else "")


def check_extension(report: Report, header: str | None, expect: bool) -> None:
    negotiated = "permessage-deflate" in (header or "")
    report.result(
        "permessage-deflate negotiation",
        negotiated == expect,
        f"expected {'negotiated' if expect else 'not negotiated'}, "
        f"Sec-WebSocket-Extensions was {header!r}",
    )


async def drive(ws, report: Report) -> None:
    """Send each payload, check its echo, then close with 1000."""
    for kind, size, data in payloads():
        await asyncio.wait_for(ws.send(data), STEP_TIMEOUT)
        got = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
        check_echo(report, kind, size, data, got)
    await asyncio.wait_for(ws.close(1000, "interop done"), STEP_TIMEOUT)
    rcvd = ws.protocol.close_rcvd
    code = rcvd.code if rcvd is not None else None
    report.result("close handshake answered with 1000", code == 1000, f"peer close code {code}")


async def run_client(args: argparse.Namespace, report: Report) -> None:
    ctx = None
    if args.url.startswith("wss://"):
        ctx = ssl.create_default_context(cafile=args.ca)
    async with connect(
        args.url,
        ssl=ctx,
        compression=None if args.no_compression else "deflate",
        max_size=MAX_SIZE,
        proxy=None,
        ping_interval=None,
        open_timeout=STEP_TIMEOUT,
        close_timeout=STEP_TIMEOUT,
    ) as ws:
        check_extension(report, ws.response.headers.get("Sec-WebSocket-Extensions"), args.expect_deflate)
        await drive(ws, report)


async def run_server(args: argparse.Namespace, report: Report) -> None:
    ctx = None
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    done: asyncio.Future = asyncio.get_running_loop().create_future()

    async def handler(ws) -> None:
        if done.done():
            return  # one connection per run
        try:
            check_extension(report, ws.response.headers.get("Sec-WebSocket-Extensions"), args.expect_deflate)
            if args.mode == "drive":
                await drive(ws, report)
            else:
                async for message in ws:
                    await ws.send(message)
                rcvd = ws.protocol.close_rcvd
                code = rcvd.code if rcvd is not None else None
                report.result("client closed with 1000", code == 1000, f"client close code {code}")
        except Exception as e:  # the remaining checks fail with this reason
            if not done.done():
                done.set_exception(e)
            return
        if not done.done():
            done.set_result(None)

    async with serve(
        handler,
        "127.0.0.1",
        0,
        ssl=ctx,
        compression=None if args.no_compression else "deflate",
        max_size=MAX_SIZE,
        ping_interval=None,
        close_timeout=STEP_TIMEOUT,
    ) as server:
        host, port = server.sockets[0].getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)
        await done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="role", required=True)
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--ca", help="CA certificate (PEM) for wss://")
    s = sub.add_parser("server")
    s.add_argument("--mode", choices=["drive", "echo"], required=True)
    s.add_argument("--tls-cert")
    s.add_argument("--tls-key")
    for p in (c, s):
        p.add_argument("--no-compression", action="store_true", help="do not offer/accept permessage-deflate")
        p.add_argument("--expect-deflate", choices=["yes", "no"], required=True)
        p.add_argument("--label", required=True)
        p.add_argument("--timeout", type=float, default=300.0, help="whole run, seconds")
    args = ap.parse_args()
    args.expect_deflate = args.expect_deflate == "yes"

    report = Report(args.label, planned_checks(getattr(args, "mode", "drive")))

    async def amain() -> None:
        # SIGTERM from the harness cancels the run, so the pending checks are
        # still printed (as failures) instead of vanishing.
        task = asyncio.current_task()
        assert task is not None, "amain runs as a task"
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        coro = run_client(args, report) if args.role == "client" else run_server(args, report)
        await asyncio.wait_for(coro, args.timeout)

    why = "not reached"
    try:
        asyncio.run(amain())
    except asyncio.CancelledError:
        why = "stopped by the harness (SIGTERM)"
    except asyncio.TimeoutError:
        why = f"timed out (run limit {args.timeout:.0f} s or a step over {STEP_TIMEOUT:.0f} s)"
    except Exception as e:
        why = f"{type(e).__name__}: {e}"
    return report.finish(why)


if __name__ == "__main__":
    sys.exit(main())
