#!/usr/bin/env python3
"""Scale-out checks for scale/run.sh: three `duplex serve` nodes sharing one
Redis broker, behind a reverse proxy (nginx or HAProxy).

Subcommands (each prints one `PASS <label>: <check>` or
`FAIL <label>: <check>: <why>` line per check; every planned check is printed
exactly once, whatever happens):

  fanout    subscribers through the proxy receive, exactly once and in
            offset order, what a duplex.v1 client on node B publishes and
            what node C's HTTP API publishes (both publishers' own order kept);
            then presence and history agree on every node.
  rooms     raw-room clients on every node (direct ports) and one through the
            proxy hear each other's messages exactly once, in order.
  failover  subscribers through the proxy, some on node A; node A is killed
            (SIGKILL, by PID) while node C's HTTP API publishes; A's clients
            reconnect through the proxy to another node and recover the gap;
            once A's presence entries expire (--presence-ttl, the nodes'
            broker.presence_ttl_secs), every other subscriber gets one `leave`
            per client A had, and presence stops listing them.
  reload    subscribers through the proxy while node C's HTTP API publishes;
            a command (nginx -s reload) runs meanwhile; every client keeps
            receiving or reconnects and recovers, nothing lost or repeated.
  wait-http poll a URL until it answers 200.

Nodes are given as `--node NAME=PORT` (in order A, B, C); NAME is the node's
`--node-name`, which the connect reply reports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

RESULTS: list[str] = []


def check(label: str, what: str, ok: bool, why: str = "") -> bool:
    line = f"PASS {label}: {what}" if ok else f"FAIL {label}: {what}: {why}"
    print(line, flush=True)
    return ok


def info(msg: str) -> None:
    print(f"# {msg}", flush=True)


# --- HTTP API -------------------------------------------------------------------------
def http(port: int, method: str, path: str, key: str, body: object | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Authorization", f"apikey {key}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None


async def api(port: int, method: str, path: str, key: str, body: object | None = None) -> tuple[int, object]:
    return await asyncio.to_thread(http, port, method, path, key, body)


async def api_publish(port: int, key: str, channel: str, data: object) -> dict:
    status, body = await api(port, "POST", "/api/publish", key, {"channel": channel, "data": data})
    if status != 200:
        raise RuntimeError(f"POST /api/publish on :{port} answered {status} {body}")
    return body["result"]


# --- a duplex.v1 subscriber that reconnects and recovers --------------------------------
class Sub:
    """Subscribes to one channel through `url`; on any disconnect reconnects
    (through the same URL) and resubscribes with `recover` from the last
    position it saw. Records every problem in `errors`."""

    def __init__(self, url: str, channel: str, name: str):
        self.url, self.channel, self.name = url, channel, name
        self.epoch: str | None = None
        self.offset = 0
        self.data: list[object] = []
        self.nodes: list[str] = []  # node of each connection, in order
        self.client_ids: list[str] = []
        self.errors: list[str] = []
        self.recoveries: list[tuple[bool, int]] = []  # (recovered, publications in reply)
        self.leaves: list[tuple[float, str]] = []  # (monotonic time, client) of leave pushes
        self.ready = asyncio.Event()
        self.progress = asyncio.Event()
        self.stopping = False
        self.ws = None

    def accept(self, pub: dict) -> None:
        off, ep = pub.get("offset"), pub.get("epoch")
        if ep != self.epoch:
            self.errors.append(f"epoch {ep!r} instead of {self.epoch!r} at offset {off}")
            return
        if off != self.offset + 1:
            self.errors.append(f"offset {off} after {self.offset} ({'duplicate' if off <= self.offset else 'gap'})")
            if off <= self.offset:
                return
        self.offset = off
        self.data.append(pub.get("data"))
        self.progress.set()

    async def command(self, ws, cmd_id: int, cmd: dict) -> dict:
        await ws.send(json.dumps({"id": cmd_id, **cmd}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg.get("id") == cmd_id:
                if "error" in msg:
                    raise RuntimeError(f"{cmd['cmd']}: error {msg['error']}")
                return msg["result"]
            # join/leave pushes, or nothing: publications start after the reply

    async def run(self) -> None:
        attempt = 0
        while not self.stopping:
            try:
                async with connect(self.url, subprotocols=["duplex.v1"], open_timeout=5, close_timeout=2) as ws:
                    self.ws = ws
                    res = await self.command(ws, 1, {"cmd": "connect", "name": "scale-check"})
                    self.nodes.append(res.get("node", "?"))
                    self.client_ids.append(res["client"])
                    sub: dict = {"cmd": "subscribe", "channel": self.channel}
                    if self.epoch is not None:
                        sub["recover"] = {"offset": self.offset, "epoch": self.epoch}
                    res = await self.command(ws, 2, sub)
                    if self.epoch is None:
                        self.epoch, self.offset = res["epoch"], res["offset"]
                    else:
                        pubs = res.get("publications", [])
                        self.recoveries.append((bool(res.get("recovered")), len(pubs)))
                        if not res.get("recovered"):
                            self.errors.append(f"recovered: false from offset {self.offset}")
                            self.epoch, self.offset = res["epoch"], res["offset"]
                        for p in pubs:
                            self.accept(p)
                    attempt = 0
                    self.ready.set()
                    async for raw in ws:
                        if isinstance(raw, bytes):
                            continue
                        msg = json.loads(raw)
                        if msg.get("push") == "publication" and msg.get("channel") == self.channel:
                            self.accept(msg)
                        elif msg.get("push") == "leave" and msg.get("channel") == self.channel:
                            self.leaves.append((time.monotonic(), msg.get("info", {}).get("client")))
                        elif msg.get("push") == "disconnect":
                            info(f"{self.name}: disconnect push {msg}")
            except (ConnectionClosed, InvalidHandshake, InvalidStatus, OSError, asyncio.TimeoutError) as e:
                if self.stopping:
                    break
                info(f"{self.name}: connection ended ({type(e).__name__}: {e}); reconnecting")
            except RuntimeError as e:
                self.errors.append(str(e))
            finally:
                self.ws = None
            if self.stopping:
                break
            attempt += 1
            await asyncio.sleep(min(0.1 * attempt, 1.0))

    async def stop(self) -> None:
        self.stopping = True
        if self.ws is not None:
            await self.ws.close()


async def start_subs(url: str, channel: str, n: int, label: str, prefix: str = "sub") -> tuple[list[Sub], list[asyncio.Task]]:
    subs = [Sub(url, channel, f"{prefix}{i}") for i in range(n)]
    tasks = [asyncio.create_task(s.run()) for s in subs]
    try:
        await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in subs)), 20)
    except asyncio.TimeoutError:
        pass
    return subs, tasks


async def wait_until_offset(subs: list[Sub], last: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(s.offset < last for s in subs):
        await asyncio.sleep(0.05)


async def stop_subs(subs: list[Sub], tasks: list[asyncio.Task]) -> None:
    for s in subs:
        await s.stop()
    await asyncio.wait(tasks, timeout=5)
    for t in tasks:
        t.cancel()


def check_stream(label: str, subs: list[Sub], expected: list[object], what: str) -> None:
    bad = []
    for s in subs:
        if s.errors:
            bad.append(f"{s.name}: {s.errors[:3]}")
        elif s.data != expected:
            got = len(s.data)
            bad.append(f"{s.name}: {got} publications, expected {len(expected)}"
                       + (f"; first difference at {next((i for i, (a, b) in enumerate(zip(s.data, expected)) if a != b), min(got, len(expected)))}"))
    check(label, what, not bad, "; ".join(bad[:4]))


# --- fanout + presence/history ----------------------------------------------------------
async def cmd_fanout(a: argparse.Namespace) -> int:
    label, ch, n = a.label, a.channel, a.n
    names = [nm for nm, _ in a.node]
    ports = dict(a.node)
    node_b, node_c = a.node[1], a.node[2]
    seed = await api_publish(node_c[1], a.key, ch, {"src": "seed"})
    subs, tasks = await start_subs(a.proxy, ch, a.subs, label)
    ready = sum(s.ready.is_set() for s in subs)
    check(label, f"{a.subs} subscribers connected through the proxy", ready == a.subs, f"{ready} ready within 20 s")
    spread = sorted({s.nodes[0] for s in subs if s.nodes})
    check(label, "the proxy spread the subscribers over all three nodes", set(spread) == set(names),
          f"they landed on {spread}")
    info(f"subscribers per node: {[sum(1 for s in subs if s.nodes and s.nodes[0] == nm) for nm in names]}")

    # Publisher 1: a duplex.v1 client connected directly to node B.
    async def ws_publisher() -> list[int]:
        offsets = []
        async with connect(f"ws://127.0.0.1:{node_b[1]}/ws", subprotocols=["duplex.v1"], open_timeout=5) as ws:
            await ws.send(json.dumps({"id": 1, "cmd": "connect"}))
            res = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if res.get("result", {}).get("node") != node_b[0]:
                raise RuntimeError(f"direct connection to node B answered {res}")
            for i in range(n):
                await ws.send(json.dumps({"id": 2 + i, "cmd": "publish", "channel": ch, "data": {"src": "ws-b", "seq": i}}))
                await asyncio.sleep(0.01)
            pending = set(range(2, 2 + n))
            while pending:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if msg.get("id") in pending:
                    pending.discard(msg["id"])
                    if "error" in msg:
                        raise RuntimeError(f"publish error {msg['error']}")
                    offsets.append(msg["result"]["offset"])
        return offsets

    async def api_publisher() -> list[int]:
        offsets = []
        for i in range(n):
            offsets.append((await api_publish(node_c[1], a.key, ch, {"src": "api-c", "seq": i}))["offset"])
            await asyncio.sleep(0.01)
        return offsets

    r = await asyncio.gather(ws_publisher(), api_publisher(), return_exceptions=True)
    ok = not any(isinstance(x, BaseException) for x in r)
    check(label, f"published {n} on node B (duplex.v1) and {n} through node C's HTTP API", ok,
          "; ".join(repr(x) for x in r if isinstance(x, BaseException)))
    last = seed["offset"] + 2 * n
    await wait_until_offset(subs, last, 15)

    # Expected: the publications in offset order, from history (checked against the
    # publishers' own order below).
    status, hist = await api(ports[names[0]], "GET", f"/api/history/{ch}", a.key)
    pubs = hist["result"]["publications"] if status == 200 else []
    expected = [p["data"] for p in pubs if p["offset"] > seed["offset"]]
    per_src_ok = all(
        [d["seq"] for d in expected if d.get("src") == src] == list(range(n)) for src in ("ws-b", "api-c")
    ) and len(expected) == 2 * n
    check(label, "history holds both publishers' streams, each once and in its order", per_src_ok,
          f"status {status}, {len(expected)} publications after the seed")
    check_stream(label, subs, expected, "every subscriber (through the proxy) received every publication once, in offset order")

    # Presence and history, asked of every node.
    want = sorted(s.client_ids[-1] for s in subs if s.client_ids)
    presence: dict[str, object] = {}
    deadline = time.monotonic() + 5
    while True:
        for nm, port in a.node:
            st, body = await api(port, "GET", f"/api/presence/{ch}", a.key)
            presence[nm] = sorted(body["result"]["clients"]) if st == 200 else f"status {st}"
        if all(v == want for v in presence.values()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    check(label, f"presence is the same {len(want)} subscribers on every node",
          all(v == want for v in presence.values()),
          "; ".join(f"{k}: {v if isinstance(v, str) else len(v)}" for k, v in presence.items()))
    hists = {}
    for nm, port in a.node:
        st, body = await api(port, "GET", f"/api/history/{ch}", a.key)
        hists[nm] = (body["result"]["epoch"], body["result"]["offset"],
                     [(p["offset"], p["data"]) for p in body["result"]["publications"]]) if st == 200 else f"status {st}"
    first = hists[names[0]]
    check(label, "history (epoch, offset, publications) is the same on every node",
          all(h == first for h in hists.values()) and not isinstance(first, str) and first[1] == last,
          "; ".join(f"{k}: {h if isinstance(h, str) else (h[0], h[1], len(h[2]))}" for k, h in hists.items()))
    await stop_subs(subs, tasks)
    return 0


# --- raw rooms ---------------------------------------------------------------------------
async def cmd_rooms(a: argparse.Namespace) -> int:
    label, room, n = a.label, a.room, a.n
    urls = [(f"direct-{nm}", f"ws://127.0.0.1:{port}/rooms/{room}") for nm, port in a.node]
    urls.append(("proxy", f"{a.proxy_base}/rooms/{room}"))
    conns = []
    try:
        for who, url in urls:
            conns.append((who, await connect(url, open_timeout=5)))
    except Exception as e:  # noqa: BLE001
        check(label, f"{len(urls)} room clients connected (one per node, one through the proxy)", False, repr(e))
        check(label, "raw-room messages cross nodes, exactly once and in order", False, "not run")
        return 0
    check(label, f"{len(urls)} room clients connected (one per node, one through the proxy)", True)
    await asyncio.sleep(0.5)  # every node's Redis subscription for the room is in place
    for i in range(n):
        for who, ws in conns:
            await ws.send(f"{who}:{i}")
    got: dict[str, list[str]] = {who: [] for who, _ in conns}
    want = {who: [f"{o}:{i}" for i in range(n) for o, _ in conns if o != who] for who, _ in conns}

    async def reader(who, ws):
        try:
            while len(got[who]) < len(want[who]):
                got[who].append(await ws.recv())
            # anything more within a short while is a duplicate or an echo
            try:
                extra = await asyncio.wait_for(ws.recv(), 0.5)
                got[who].append(extra)
            except asyncio.TimeoutError:
                pass
        except ConnectionClosed:
            pass

    await asyncio.wait_for(asyncio.gather(*(reader(w, ws) for w, ws in conns)), 20)
    bad = []
    for who, _ in conns:
        per_sender_ok = all(
            [m for m in got[who] if m.startswith(o + ":")] == [f"{o}:{i}" for i in range(n)]
            for o, _ in conns if o != who
        )
        if not per_sender_ok or len(got[who]) != len(want[who]):
            bad.append(f"{who}: {len(got[who])} of {len(want[who])} messages, per-sender order ok: {per_sender_ok}")
    check(label, "raw-room messages cross nodes, exactly once and in order", not bad, "; ".join(bad))
    for _, ws in conns:
        await ws.close()
    return 0


# --- failover and reload -------------------------------------------------------------------
async def publish_stream(port: int, key: str, ch: str, stop: asyncio.Event, rate: float, start_seq: int = 0) -> list[dict]:
    sent = []
    seq = start_seq
    while not stop.is_set():
        try:
            sent.append({"seq": seq, **await api_publish(port, key, ch, {"src": "api", "seq": seq})})
            seq += 1
        except Exception as e:  # noqa: BLE001
            info(f"publish failed ({e}); retrying")
        await asyncio.sleep(1 / rate)
    return sent


async def cmd_failover(a: argparse.Namespace) -> int:
    label, ch = a.label, a.channel
    victim, victim_pid = a.node[0][0], a.kill_pid
    api_port = a.node[2][1]
    seed = await api_publish(api_port, a.key, ch, {"src": "seed"})
    subs, tasks = await start_subs(a.proxy, ch, a.subs, label)
    on_victim = [s for s in subs if s.nodes and s.nodes[0] == victim]
    more = 0
    while len(on_victim) < 2 and more < 12:  # make sure node A has clients to lose
        s2, t2 = await start_subs(a.proxy, ch, 1, label, prefix=f"extra{more}-")
        subs += s2
        tasks += t2
        more += 1
        on_victim = [s for s in subs if s.nodes and s.nodes[0] == victim]
    check(label, f"{len(subs)} subscribers through the proxy, {len(on_victim)} of them on node A ({victim})",
          len(on_victim) >= 1 and all(s.ready.is_set() for s in subs), f"nodes: {[s.nodes for s in subs]}")
    stop = asyncio.Event()
    pub = asyncio.create_task(publish_stream(api_port, a.key, ch, stop, a.rate))
    await asyncio.sleep(2)
    os.kill(victim_pid, signal.SIGKILL)
    info(f"killed node A ({victim}, pid {victim_pid}) with SIGKILL")
    t_kill = time.monotonic()
    deadline = t_kill + 20
    while time.monotonic() < deadline and not all(len(s.nodes) >= 2 for s in on_victim):
        await asyncio.sleep(0.05)
    reconnected = [s for s in on_victim if len(s.nodes) >= 2]
    info(f"node A's clients reconnected within {time.monotonic() - t_kill:.1f} s: {[s.nodes for s in on_victim]}")
    await asyncio.sleep(2)
    stop.set()
    sent = await pub
    last = sent[-1]["offset"] if sent else seed["offset"]
    await wait_until_offset(subs, last, 15)
    check(label, "every client of node A reconnected through the proxy to another node",
          len(reconnected) == len(on_victim) and all(victim not in s.nodes[1:] for s in reconnected),
          f"{[s.nodes for s in on_victim]}")
    recs = [r for s in on_victim for r in s.recoveries]
    check(label, "each resubscribed with recover and got recovered: true",
          bool(recs) and all(r[0] for r in recs) and len(recs) >= len(on_victim), f"recoveries {recs}")
    offsets_ok = [x["offset"] for x in sent] == list(range(seed["offset"] + 1, seed["offset"] + 1 + len(sent)))
    expected = [{"src": "api", "seq": x["seq"]} for x in sent]
    check(label, f"{len(sent)} publications through node C's HTTP API got consecutive offsets", offsets_ok and bool(sent),
          f"offsets {[x['offset'] for x in sent][:10]}...")
    check_stream(label, subs, expected, "every subscriber has every publication once, in order (nothing lost or repeated across the kill)")
    info(f"recovered publications per reconnect: {recs}")

    # Node A could not say that its clients left: their presence entries expire after the
    # TTL, and the sweep of a live node announces each leave once.
    gone = sorted(s.client_ids[0] for s in on_victim if s.client_ids)
    others = [s for s in subs if s.nodes and s.nodes[0] != victim]
    sweep = min(5.0, a.presence_ttl / 3)
    deadline = t_kill + a.presence_ttl + sweep + 3
    while time.monotonic() < deadline and not all(set(gone) <= {c for _, c in s.leaves} for s in others):
        await asyncio.sleep(0.05)
    await asyncio.sleep(2 * sweep)  # more sweeps: still once
    times = [t - t_kill for s in others for t, _ in s.leaves]
    bad = [f"{s.name}: {sorted(c for _, c in s.leaves)}" for s in others if sorted(c for _, c in s.leaves) != gone]
    # An entry expires a TTL after its latest heartbeat, sent every third of the TTL.
    earliest = a.presence_ttl * 2 / 3 - 0.2
    check(label, f"each of the {len(others)} subscribers on other nodes got one leave per client of node A "
          f"({len(gone)}), {earliest:.1f} to {a.presence_ttl + sweep + 3:g} s after the kill",
          bool(others) and not bad and bool(times) and min(times) >= earliest,
          f"expected {gone}; " + "; ".join(bad[:3]) + f"; after {min(times, default=0):.1f}-{max(times, default=0):.1f} s")
    info(f"leave pushes for node A's clients arrived {min(times, default=0):.1f} to {max(times, default=0):.1f} s after the kill "
         f"(presence TTL {a.presence_ttl:g} s, sweep every {sweep:g} s)")
    st, body = await api(api_port, "GET", f"/api/presence/{ch}", a.key)
    listed = set(body["result"]["clients"]) if st == 200 else set()
    check(label, "presence no longer lists node A's clients", st == 200 and not (listed & set(gone)),
          f"status {st}, still listed: {sorted(listed & set(gone))}")
    await stop_subs(subs, tasks)
    return 0


async def cmd_reload(a: argparse.Namespace) -> int:
    label, ch = a.label, a.channel
    api_port = a.node[2][1]
    seed = await api_publish(api_port, a.key, ch, {"src": "seed"})
    subs, tasks = await start_subs(a.proxy, ch, a.subs, label)
    check(label, f"{a.subs} subscribers through the proxy", all(s.ready.is_set() for s in subs), "not all ready")
    stop = asyncio.Event()
    pub = asyncio.create_task(publish_stream(api_port, a.key, ch, stop, a.rate))
    await asyncio.sleep(1.5)
    before = [s.offset for s in subs]
    r = await asyncio.to_thread(subprocess.run, a.reload_cmd, shell=True, capture_output=True, text=True, timeout=20)
    check(label, f"`{a.reload_cmd.split(' -c ')[0]} ...` succeeded", r.returncode == 0, f"status {r.returncode}: {r.stderr.strip()[-300:]}")
    # A new connection after the reload is served by the new configuration.
    late, late_tasks = await start_subs(a.proxy, ch, 1, label, prefix="after-reload-")
    check(label, "a new connection through the proxy works right after the reload", late[0].ready.is_set(), "not ready within 20 s")
    await asyncio.sleep(1.5)
    moved = [s.offset > b for s, b in zip(subs, before)]
    info(f"established clients still receiving right after the reload: {sum(moved)} of {len(subs)}")
    await asyncio.sleep(a.hold)
    stop.set()
    sent = await pub
    last = sent[-1]["offset"] if sent else seed["offset"]
    await wait_until_offset(subs + late, last, 15)
    reconnected = [s for s in subs if len(s.nodes) > 1]
    recs = [r for s in subs for r in s.recoveries]
    info(f"clients that reconnected: {len(reconnected)} of {len(subs)}; recoveries {recs}")
    check(label, "clients that were cut reconnected and recovered (recovered: true)", all(r[0] for r in recs), f"recoveries {recs}")
    expected = [{"src": "api", "seq": x["seq"]} for x in sent]
    check_stream(label, subs, expected, f"every established subscriber has all {len(sent)} publications once, in order, across the reload")
    await stop_subs(subs + late, tasks + late_tasks)
    return 0


async def cmd_wait_http(a: argparse.Namespace) -> int:
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(a.url, timeout=2) as resp:
                if resp.status == 200:
                    return 0
        except Exception:  # noqa: BLE001
            pass
        await asyncio.sleep(0.1)
    return 1


def node_arg(s: str) -> tuple[str, int]:
    name, port = s.split("=")
    return name, int(port)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--label", required=True)
    common.add_argument("--node", type=node_arg, action="append", required=True, help="NAME=PORT, nodes A, B, C in order")
    common.add_argument("--key", required=True, help="the HTTP API key")
    common.add_argument("--proxy", help="ws://127.0.0.1:PORT/ws through the proxy")
    common.add_argument("--channel", default="chat:scale")
    common.add_argument("--subs", type=int, default=6)
    common.add_argument("--rate", type=float, default=25.0, help="HTTP publications per second")
    f = sp.add_parser("fanout", parents=[common])
    f.add_argument("--n", type=int, default=40, help="publications per publisher")
    r = sp.add_parser("rooms", parents=[common])
    r.add_argument("--room", default="scale")
    r.add_argument("--n", type=int, default=20)
    r.add_argument("--proxy-base", required=True, help="ws://127.0.0.1:PORT")
    k = sp.add_parser("failover", parents=[common])
    k.add_argument("--kill-pid", type=int, required=True, help="PID of node A")
    k.add_argument("--presence-ttl", type=float, required=True, help="the nodes' broker.presence_ttl_secs")
    rl = sp.add_parser("reload", parents=[common])
    rl.add_argument("--reload-cmd", required=True)
    rl.add_argument("--hold", type=float, default=12.0, help="seconds to keep publishing after the reload")
    w = sp.add_parser("wait-http")
    w.add_argument("url")
    w.add_argument("--timeout", type=float, default=20)
    a = p.parse_args()
    fn = {"fanout": cmd_fanout, "rooms": cmd_rooms, "failover": cmd_failover, "reload": cmd_reload,
          "wait-http": cmd_wait_http}[a.cmd]
    return asyncio.run(asyncio.wait_for(fn(a), 120))


if __name__ == "__main__":
    sys.exit(main())
