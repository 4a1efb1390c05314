#!/usr/bin/env python3
"""Python `websockets` as a plain client of the hub's raw rooms (run by interop/rooms/run.sh).

room:  join ws://HOST/rooms/ROOM as peer ID of --peers (the room's members, in
       ring order), wait for the file SYNC/go, send this peer's stream (see
       stream() below; room_node.mjs builds the same one), and check that the
       stream of every other member arrives exactly once, in order, byte for
       byte, with its type (text or binary); that none of our own arrives (or,
       with --expect-own, all of it, in order); that nothing from outside the
       room arrives. Prints `READY` once joined and `RECEIVED-ALL` once every
       expected message is in, then waits for the file SYNC/stop (so late
       duplicates would still be seen) and closes with 1000.
probe: against ws://HOST: a foreign browser Origin is refused with HTTP 403 on
       /rooms/lobby, /echo and /ws; a localhost Origin is accepted; /echo
       echoes text and binary (0 and 70000 B) byte for byte and answers a close
       with 1000.

Each check prints one line, `PASS <label>: <check>` or
`FAIL <label>: <check>: <why>`; every planned check is printed exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

TEXT_BODY = "caf\u00e9 \u2603 \u65e5\u672c \U0001f600"
BIN_SIZES = [64, 70000, 1000]
EVIL_ORIGIN = "https://evil.example"
STEP_TIMEOUT = 30.0
MAX_SIZE = 1 << 20


# --- the stream every room member sends (identical in room_node.mjs) ------------------
def text_message(peer: str, seq: int, body: str) -> str:
    return f"{peer} {seq} {body}"


def binary_message(peer: str, index: int, seq: int, size: int) -> bytes:
    head = f"{peer} {seq}|".encode()
    rest = bytes((j * 7 + seq * 13 + index * 29 + 0x80) & 0xFF for j in range(size - len(head)))
    return head + rest


def stream(peer: str, index: int, n: int) -> list[str | bytes]:
    """N texts with the binaries spread among them, then the empty binary between a
    `begin empty` and an `end empty` text (an empty message names no sender, so members
    send it one at a time, in ring order)."""
    total = n + len(BIN_SIZES)
    at = {(i + 1) * total // (len(BIN_SIZES) + 1): size for i, size in enumerate(BIN_SIZES)}
    out: list[str | bytes] = []
    for seq in range(total):
        if seq in at:
            out.append(binary_message(peer, index, seq, at[seq]))
        else:
            out.append(text_message(peer, seq, TEXT_BODY + "." * (seq % 5)))
    out.append(text_message(peer, total, "begin empty"))
    out.append(b"")
    out.append(text_message(peer, total + 2, "end empty"))
    return out


def describe(m: str | bytes | None) -> str:
    if m is None:
        return "nothing"
    kind = "text" if isinstance(m, str) else "binary"
    size = len(m.encode()) if isinstance(m, str) else len(m)
    head = m[:24] if isinstance(m, str) else m[:24].decode("ascii", "replace")
    return f"{kind} {size} B {head!r}"


# --- reporting ------------------------------------------------------------------------
class Report:
    def __init__(self, label: str, planned: list[str]):
        self.label = label
        self.pending = list(planned)
        self.failed = 0

    def result(self, check: str, ok: bool, why: str = "") -> None:
        if check not in self.pending:
            return  # each planned check is reported once
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


async def wait_file(path: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# --- room -----------------------------------------------------------------------------
def room_checks(args: argparse.Namespace) -> list[str]:
    checks = [f"received every message of {p} once, in order, byte for byte" for p in args.peers if p != args.id]
    checks.append(
        "received all of its own messages back, in order"
        if args.expect_own
        else "received none of its own messages"
    )
    checks.append(f"received nothing from outside room {args.room}")
    checks.append("sent its whole stream")
    checks.append("close answered with 1000")
    return checks


class Inbox:
    """Attributes each received message to its sender and compares it with that sender's
    stream."""

    def __init__(self, args: argparse.Namespace):
        self.me = args.id
        self.expect_own = args.expect_own
        self.expected = {
            p: stream(p, i, args.n) for i, p in enumerate(args.peers) if p != self.me or args.expect_own
        }
        self.members = set(args.peers)
        self.pos = {p: 0 for p in self.expected}
        self.error: dict[str, str] = {}
        self.own = 0
        self.foreign: list[str] = []
        self.open_empty: str | None = None  # whose begin/end window we are in
        self.ended: set[str] = set()
        self.changed = asyncio.Event()

    def complete(self) -> bool:
        return all(self.pos[p] == len(s) for p, s in self.expected.items())

    def handle(self, m: str | bytes) -> None:
        sender = None
        if isinstance(m, str):
            sender = m.split(" ", 1)[0]
            body = m.split(" ", 2)[2] if m.count(" ") >= 2 else ""
            if body == "begin empty" and sender in self.members:
                if self.open_empty is not None:
                    self.foreign.append(f"{sender} began its empty message inside {self.open_empty}'s window")
                self.open_empty = sender
            elif body == "end empty" and sender == self.open_empty:
                self.open_empty = None
        elif m:
            sender = m.split(b" ", 1)[0].decode("ascii", "replace")
        else:
            sender = self.open_empty
            if sender is None:
                self.foreign.append("an empty binary message outside any member's begin/end window")
                return
        if sender not in self.members:
            self.foreign.append(describe(m))
        elif sender == self.me and not self.expect_own:
            self.own += 1
        else:
            i = self.pos[sender]
            want = self.expected[sender][i] if i < len(self.expected[sender]) else None
            if want is None:
                self.error.setdefault(sender, f"an extra message after its stream: {describe(m)}")
            elif type(want) is not type(m) or want != m:
                self.error.setdefault(sender, f"message #{i}: got {describe(m)}, expected {describe(want)}")
            self.pos[sender] = i + 1
            if isinstance(m, str) and m.endswith(" end empty"):
                self.ended.add(sender)
        self.changed.set()


async def run_room(args: argparse.Namespace, report: Report) -> None:
    inbox = Inbox(args)
    url = f"{args.url.rstrip('/')}/rooms/{args.room}"
    async with connect(
        url, max_size=MAX_SIZE, proxy=None, ping_interval=None, open_timeout=STEP_TIMEOUT, close_timeout=STEP_TIMEOUT
    ) as ws:
        print("READY", flush=True)

        async def receive() -> None:
            async for m in ws:
                inbox.handle(m)

        receiver = asyncio.create_task(receive())
        try:
            if not await wait_file(os.path.join(args.sync, "go"), 60):
                raise RuntimeError("no go file within 60 s")
            mine = stream(args.id, args.peers.index(args.id), args.n)
            ring = args.peers.index(args.id)
            sent = 0
            try:
                for m in mine[:-3]:
                    await asyncio.wait_for(ws.send(m), STEP_TIMEOUT)
                    sent += 1
                # Our turn for the empty message comes once the previous member ended its own.
                if ring > 0:
                    before = args.peers[ring - 1]
                    deadline = time.monotonic() + STEP_TIMEOUT
                    while before not in inbox.ended and time.monotonic() < deadline and not receiver.done():
                        inbox.changed.clear()
                        try:
                            await asyncio.wait_for(inbox.changed.wait(), 0.5)
                        except asyncio.TimeoutError:
                            pass
                    if before not in inbox.ended:
                        raise RuntimeError(f"{before}'s end-empty message never came")
                for m in mine[-3:]:
                    await asyncio.wait_for(ws.send(m), STEP_TIMEOUT)
                    sent += 1
                report.result("sent its whole stream", True)
            except Exception as e:
                report.result("sent its whole stream", False, f"{sent} of {len(mine)} sent: {e!r}")
            deadline = time.monotonic() + STEP_TIMEOUT
            while not inbox.complete() and time.monotonic() < deadline and not receiver.done():
                inbox.changed.clear()
                try:
                    await asyncio.wait_for(inbox.changed.wait(), 0.5)
                except asyncio.TimeoutError:
                    pass
            if inbox.complete():
                print("RECEIVED-ALL", flush=True)
            await wait_file(os.path.join(args.sync, "stop"), 60)
            await asyncio.sleep(0.3)  # late duplicates would arrive now
        finally:
            closed_early = receiver.done()
            await asyncio.wait_for(ws.close(1000, "room test done"), STEP_TIMEOUT)
            receiver.cancel()
        rcvd = ws.protocol.close_rcvd
        code = rcvd.code if rcvd is not None else None
        report.result(
            "close answered with 1000",
            code == 1000 and not closed_early,
            f"server closed first (code {code})" if closed_early else f"close code {code}",
        )

    for p in inbox.expected:
        check = (
            "received all of its own messages back, in order"
            if p == args.id
            else f"received every message of {p} once, in order, byte for byte"
        )
        n, want = inbox.pos[p], len(inbox.expected[p])
        if p in inbox.error:
            report.result(check, False, inbox.error[p])
        else:
            report.result(check, n == want, f"{n} of {want} messages")
    if not args.expect_own:
        report.result("received none of its own messages", inbox.own == 0, f"{inbox.own} came back")
    report.result(
        f"received nothing from outside room {args.room}",
        not inbox.foreign,
        f"{len(inbox.foreign)} foreign, first: {inbox.foreign[:1]}",
    )


# --- probe ----------------------------------------------------------------------------
PROBE_ECHOES = [
    ("text 0 B", ""),
    ("text with 1- to 4-byte UTF-8", TEXT_BODY * 200),
    ("binary 0 B", b""),
    ("binary 70000 B", binary_message("echo", 0, 0, 70000)),
]
PROBE_PATHS = ["/rooms/lobby", "/echo", "/ws"]


def probe_checks() -> list[str]:
    checks = [f"{p} refuses Origin {EVIL_ORIGIN} with 403" for p in PROBE_PATHS]
    checks.append("/echo accepts a localhost Origin")
    checks += [f"/echo echoes {name}" for name, _ in PROBE_ECHOES]
    checks.append("/echo answers a close with 1000")
    return checks


async def run_probe(args: argparse.Namespace, report: Report) -> None:
    base = args.url.rstrip("/")
    port = base.rsplit(":", 1)[1]
    for path in PROBE_PATHS:
        check = f"{path} refuses Origin {EVIL_ORIGIN} with 403"
        try:
            async with connect(
                base + path,
                origin=EVIL_ORIGIN,
                subprotocols=["duplex.v1"] if path == "/ws" else None,
                proxy=None,
                open_timeout=STEP_TIMEOUT,
            ):
                report.result(check, False, "the handshake succeeded")
        except InvalidStatus as e:
            status = e.response.status_code
            report.result(check, status == 403, f"HTTP {status}")
        except Exception as e:
            report.result(check, False, repr(e))
    async with connect(
        base + "/echo",
        origin=f"http://localhost:{port}",
        max_size=MAX_SIZE,
        proxy=None,
        ping_interval=None,
        open_timeout=STEP_TIMEOUT,
        close_timeout=STEP_TIMEOUT,
    ) as ws:
        report.result("/echo accepts a localhost Origin", True)
        for name, data in PROBE_ECHOES:
            await asyncio.wait_for(ws.send(data), STEP_TIMEOUT)
            got = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
            ok = type(got) is type(data) and got == data
            report.result(f"/echo echoes {name}", ok, f"got {describe(got)}")
        await asyncio.wait_for(ws.close(1000, "probe done"), STEP_TIMEOUT)
        rcvd = ws.protocol.close_rcvd
        code = rcvd.code if rcvd is not None else None
        report.result("/echo answers a close with 1000", code == 1000, f"close code {code}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["room", "probe"])
    ap.add_argument("--url", required=True, help="ws://127.0.0.1:PORT")
    ap.add_argument("--label", required=True)
    ap.add_argument("--room", default="lobby")
    ap.add_argument("--id", help="this member's id (room mode)")
    ap.add_argument("--peers", default="", help="the room's members, comma-separated, in ring order")
    ap.add_argument("--n", type=int, default=50, help="text messages per member")
    ap.add_argument("--sync", help="directory of the go and stop files")
    ap.add_argument("--expect-own", action="store_true", help="rooms.echo_to_sender is on")
    ap.add_argument("--timeout", type=float, default=150.0, help="for the whole run, seconds")
    args = ap.parse_args()
    args.peers = [p for p in args.peers.split(",") if p]
    if args.mode == "room" and (args.id not in args.peers or not args.sync):
        ap.error("room mode needs --id (one of --peers) and --sync")
    report = Report(args.label, room_checks(args) if args.mode == "room" else probe_checks())
    run = run_room if args.mode == "room" else run_probe
    try:
        asyncio.run(asyncio.wait_for(run(args, report), args.timeout))
    except Exception as e:
        return report.finish(f"the run stopped: {e!r}")
    return report.finish("not checked")


if __name__ == "__main__":
    sys.exit(main())
