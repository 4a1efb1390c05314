#!/usr/bin/env python3
"""Writes the committed seed corpus: fuzz/corpus/<target>/seed-*.

Run from anywhere: `python3 fuzz/gen_seeds.py`. Deterministic (fixed masks, zlib output for
fixed inputs), so re-running it changes nothing unless this file or fuzz/captures/ changed.

Seeds named `captured-*` are built from real traffic in fuzz/captures/ (Chromium 148,
Firefox 140, curl 7.88, Python websockets 17.4, Node ws 8.23 and Node 20's built-in client;
see fuzz/captures/README.md). The others are written here: RFC 6455 §5.7 and RFC 7692 §7.2.3
frames, hand-written handshakes in the shapes Safari, tungstenite and proxies send, and one
seed per refusal rule. The settings bytes at the start of each input are documented in
fuzz/src/targets.rs and fuzz/README.md.
"""

import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

# ---- frames -------------------------------------------------------------------------------

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(opcode, payload, fin=True, rsv1=False, mask=None, len_form=None):
    """One frame. `len_form` forces a (possibly non-minimal) length encoding: 7, 16 or 64."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    form = len_form or (7 if n < 126 else 16 if n < 65536 else 64)
    m = 0x80 if mask else 0
    if form == 7:
        head = bytes([b0, m | n])
    elif form == 16:
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if mask:
        head += bytes(mask)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


class Deflater:
    """A raw-deflate compressor as RFC 7692 uses it: sync flush, trailer stripped."""

    def __init__(self, level=6, wbits=15, no_context_takeover=False):
        self.level, self.wbits, self.reset = level, wbits, no_context_takeover
        self.z = self._new()

    def _new(self):
        # zlib refuses raw windows of 8 bits; RFC 7692 implementations use 9 instead.
        return zlib.compressobj(self.level, zlib.DEFLATED, -max(self.wbits, 9))

    def message(self, data):
        out = self.z.compress(data) + self.z.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        if self.reset:
            self.z = self._new()
        return out[:-4]


JSON = (
    b'{"channel":"room:lobby","offset":1842,"epoch":"ZqQ1","data":{"user":"alice","text":'
    b'"hello everyone, the build is green again","ts":1731312000123,"tags":["ci","deploy"]}}'
)
JSON_1K = b"[" + b",".join([JSON] * 5)[:1020] + b"]"
MASKS = [bytes([0x37, 0xFA, 0x21, 0x3D]), bytes([0x12, 0x34, 0x56, 0x78]), bytes([0, 0, 0, 0])]

# RFC 7692 §7.2.3.1: "Hello" compressed; §7.2.3.2: the same message sharing context;
# §7.2.3.3: a stored block; §7.2.3.4: BFINAL set.
RFC_HELLO = bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
RFC_HELLO_AGAIN = bytes([0xF2, 0x00, 0x11, 0x00, 0x00])
RFC_HELLO_STORED = bytes([0x00, 0x05, 0x00, 0xFA, 0xFF]) + b"Hello" + b"\x00"
RFC_HELLO_BFINAL = bytes([0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00])


def write(target, name, data):
    path = os.path.join(ROOT, target)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "seed-" + name), "wb") as f:
        f.write(data)


CAPTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "captures")


def captured(name):
    with open(os.path.join(CAPTURES, name), "rb") as f:
        return f.read()


def parse_frames(data):
    """(fin, rsv1, opcode, unmasked payload) for each whole frame in `data`."""
    out, pos = [], 0
    while pos + 2 <= len(data):
        b0, b1 = data[pos], data[pos + 1]
        n, pos = b1 & 0x7F, pos + 2
        if n == 126:
            n, pos = struct.unpack(">H", data[pos:pos + 2])[0], pos + 2
        elif n == 127:
            n, pos = struct.unpack(">Q", data[pos:pos + 8])[0], pos + 8
        mask = data[pos:pos + 4] if b1 & 0x80 else None
        pos += 4 if mask else 0
        payload = data[pos:pos + n]
        pos += n
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        out.append((bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, payload))
    return out


def settings(deflate=False, small=False, read_buffer=False, vectored=False, eof=False,
             server_nct=False, client_nct=False, min_size=False, sbits=15, cbits=15,
             level=1, split=0):
    flags = (deflate * 0x01 | small * 0x02 | read_buffer * 0x04 | vectored * 0x08
             | eof * 0x10 | server_nct * 0x20 | client_nct * 0x40 | min_size * 0x80)
    bits = (sbits - 8) | (cbits - 8) << 3 | (level & 3) << 6
    return bytes([flags, bits, split])


def connection_seeds(target, mask_of):
    """mask_of(i) is the masking key for the i-th frame: a list of keys for a server target
    (frames from a client are masked), always None for a client target."""
    m = mask_of
    s = settings
    write(target, "rfc-hello", s() + frame(TEXT, b"Hello", mask=m(0)))
    write(target, "rfc-hello-bytewise", s(split=8) + frame(TEXT, b"Hello", mask=m(0)))
    write(target, "rfc-fragmented-hello",
          s(split=3) + frame(TEXT, b"Hel", fin=False, mask=m(0)) + frame(CONT, b"lo", mask=m(1)))
    write(target, "rfc-ping-in-fragments",
          s(split=2) + frame(TEXT, b"Hel", fin=False, mask=m(0)) + frame(PING, b"Hello", mask=m(1))
          + frame(CONT, b"lo", mask=m(2)))
    write(target, "rfc-binary-256", s() + frame(BINARY, bytes(range(256)), mask=m(0)))
    write(target, "binary-300-split", s(split=0x47) + frame(BINARY, bytes(300), mask=m(1)))
    write(target, "non-minimal-64bit-length",
          s() + frame(BINARY, b"0123456789", mask=m(0), len_form=64))
    write(target, "non-minimal-16bit-length",
          s() + frame(TEXT, b"short", mask=m(0), len_form=16))
    write(target, "ping-pong-close",
          s(vectored=True) + frame(PING, b"Hello", mask=m(0)) + frame(PONG, b"", mask=m(1))
          + frame(CLOSE, struct.pack(">H", 1000) + b"bye", mask=m(2)))
    write(target, "close-then-data",
          s() + frame(CLOSE, struct.pack(">H", 1001), mask=m(0)) + frame(TEXT, b"late", mask=m(1)))
    write(target, "close-empty", s(eof=True) + frame(CLOSE, b"", mask=m(0)))
    write(target, "close-bad-code", s() + frame(CLOSE, struct.pack(">H", 1005), mask=m(0)))
    write(target, "close-one-byte", s() + frame(CLOSE, b"\x03", mask=m(0)))
    write(target, "close-bad-utf8-reason",
          s() + frame(CLOSE, struct.pack(">H", 1000) + b"\xff", mask=m(0)))
    utf8 = "κόσμε 🎉".encode()
    write(target, "utf8-split-in-codepoint",
          s(split=1) + frame(TEXT, utf8[:7], fin=False, mask=m(0)) + frame(CONT, utf8[7:], mask=m(1)))
    write(target, "utf8-invalid", s() + frame(TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", mask=m(0)))
    write(target, "utf8-invalid-in-fragment",
          s(split=5) + frame(TEXT, b"ok \xf0\x9f", fin=False, mask=m(0)) + frame(CONT, b"\x28ok", mask=m(1)))
    many = b"".join(frame(TEXT, b"msg %d" % i, mask=m(i % 3)) for i in range(40))
    write(target, "many-small-frames", s(read_buffer=True, vectored=True) + many)
    write(target, "many-small-frames-split", s(split=0x25) + many)
    write(target, "small-limits-too-big", s(small=True) + frame(BINARY, bytes(600), mask=m(0)))
    frags = b"".join(frame(BINARY if i == 0 else CONT, b"x" * 10, fin=(i == 9), mask=m(i % 3))
                     for i in range(10))
    write(target, "small-limits-too-many-fragments", s(small=True) + frags)
    write(target, "reserved-bits", s() + bytes([0xF1]) + frame(TEXT, b"x", mask=m(0))[1:])
    write(target, "unknown-opcode", s() + frame(0x3, b"x", mask=m(0)))
    write(target, "fragmented-ping", s() + frame(PING, b"x", fin=False, mask=m(0)))
    write(target, "long-ping", s() + frame(PING, bytes(126), mask=m(0)))
    write(target, "unexpected-continuation", s() + frame(CONT, b"x", mask=m(0)))
    write(target, "expected-continuation",
          s() + frame(TEXT, b"a", fin=False, mask=m(0)) + frame(TEXT, b"b", mask=m(1)))
    write(target, "eof-mid-frame", s(eof=True) + frame(TEXT, b"Hello", mask=m(0))[:-2])
    # The wrong masking for the role: a server gets unmasked frames, a client masked ones.
    wrong = None if m(0) else MASKS[0]
    write(target, "wrong-masking", s() + frame(TEXT, b"Hello", mask=wrong))

    # permessage-deflate (RFC 7692 §7.2.3): the RFC's own bytes first.
    write(target, "deflate-rfc-hello", s(deflate=True) + frame(TEXT, RFC_HELLO, rsv1=True, mask=m(0)))
    write(target, "deflate-rfc-hello-fragmented",
          s(deflate=True, split=1) + frame(TEXT, RFC_HELLO[:3], fin=False, rsv1=True, mask=m(0))
          + frame(CONT, RFC_HELLO[3:], mask=m(1)))
    write(target, "deflate-rfc-shared-context",
          s(deflate=True) + frame(TEXT, RFC_HELLO, rsv1=True, mask=m(0))
          + frame(TEXT, RFC_HELLO_AGAIN, rsv1=True, mask=m(1)))
    write(target, "deflate-rfc-stored-block",
          s(deflate=True) + frame(TEXT, RFC_HELLO_STORED, rsv1=True, mask=m(0)))
    write(target, "deflate-rfc-bfinal",
          s(deflate=True, server_nct=True, client_nct=True)
          + frame(TEXT, RFC_HELLO_BFINAL, rsv1=True, mask=m(0)))
    write(target, "deflate-empty-message", s(deflate=True) + frame(BINARY, b"\x00", rsv1=True, mask=m(0)))
    d = Deflater(level=6)
    msgs = b"".join(frame(TEXT, d.message(JSON), rsv1=True, mask=m(i)) for i in range(3))
    write(target, "deflate-json-context-takeover", s(deflate=True, vectored=True) + msgs)
    d = Deflater(level=9, wbits=9, no_context_takeover=True)
    msgs = b"".join(frame(TEXT, d.message(JSON_1K), rsv1=True, mask=m(i)) for i in range(2))
    write(target, "deflate-json-1k-window-9",
          s(deflate=True, sbits=9, cbits=9, server_nct=True, client_nct=True, split=0x46) + msgs)
    d = Deflater(level=1)
    mixed = (frame(TEXT, d.message(b"compressed"), rsv1=True, mask=m(0))
             + frame(TEXT, b"plain", mask=m(1))
             + frame(BINARY, d.message(bytes(200)), rsv1=True, mask=m(2)))
    write(target, "deflate-mixed-compressed-and-plain", s(deflate=True, min_size=True) + mixed)
    bomb = Deflater(level=9, no_context_takeover=True).message(bytes(100_000))
    write(target, "deflate-bomb-small-limits",
          s(deflate=True, small=True) + frame(BINARY, bomb, rsv1=True, mask=m(0)))
    write(target, "deflate-garbage", s(deflate=True) + frame(TEXT, b"\xff\xfe\xfd", rsv1=True, mask=m(0)))
    write(target, "deflate-rsv1-on-continuation",
          s(deflate=True) + frame(TEXT, RFC_HELLO[:3], fin=False, rsv1=True, mask=m(0))
          + frame(CONT, RFC_HELLO[3:], rsv1=True, mask=m(1)))
    write(target, "deflate-rsv1-on-ping", s(deflate=True) + frame(PING, b"x", rsv1=True, mask=m(0)))
    write(target, "rsv1-without-deflate", s() + frame(TEXT, RFC_HELLO, rsv1=True, mask=m(0)))
    bad_utf8 = Deflater().message(b"valid start \xc3\x28 then bad")
    write(target, "deflate-invalid-utf8", s(deflate=True, split=4) + frame(TEXT, bad_utf8, rsv1=True, mask=m(0)))

    # Frames captured from real peers (fuzz/captures/README.md).
    if target == "server_connection":
        # Browsers and clients after negotiating plain `permessage-deflate` (15-bit windows).
        for name in ["chromium-148", "firefox-140", "node-ws", "python-websockets-17.4"]:
            frames = captured(name + "-frames.bin")
            write(target, "captured-%s-deflate" % name, s(deflate=True) + frames)
            write(target, "captured-%s-deflate-bytewise" % name, s(deflate=True, split=8) + frames)
        write(target, "captured-node-20-undici",
              s(deflate=True) + captured("node-20-undici-frames.bin"))
    else:
        write(target, "captured-python-websockets-17.4",
              s() + captured("python-websockets-17.4-server-frames.bin"))
        write(target, "captured-node-ws", s(vectored=True) + captured("node-ws-server-frames.bin"))
        # python websockets answered server_max_window_bits=12; client_max_window_bits=12.
        write(target, "captured-python-websockets-17.4-deflate-window-12",
              s(deflate=True, sbits=12, cbits=12)
              + captured("python-websockets-17.4-deflate-frames.bin"))
        write(target, "captured-node-ws-deflate",
              s(deflate=True, split=3) + captured("node-ws-deflate-frames.bin"))


def handshake_requests():
    t = "handshake_request"

    def req(lines, flags=0, extra=b""):
        return bytes([flags]) + ("\r\n".join(lines) + "\r\n\r\n").encode() + extra

    rfc = ["GET /chat HTTP/1.1", "Host: server.example.com", "Upgrade: websocket",
           "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
           "Origin: http://example.com", "Sec-WebSocket-Protocol: chat, superchat",
           "Sec-WebSocket-Version: 13"]
    write(t, "rfc6455", req(rfc))
    write(t, "rfc6455-bytewise", req(rfc, flags=8 << 2))
    write(t, "rfc6455-no-deflate-small-limits", req(rfc, flags=0x03 | (5 << 2)))
    # Real requests (fuzz/captures/README.md), then hand-written ones in the shapes other
    # clients and proxies send.
    for name in ["chromium-148", "firefox-140", "curl-7.88", "python-websockets-17.4",
                 "node-ws", "node-20-undici"]:
        head = captured(name + "-request.http")
        write(t, "captured-" + name, bytes([0]) + head)
        write(t, "captured-%s-no-deflate-bytewise" % name, bytes([0x01 | 8 << 2]) + head)
    # The key from a popular curl one-liner: "Hello, world!" is 13 bytes, not 16 (400).
    write(t, "captured-curl-7.88-short-key", bytes([0]) + captured("curl-7.88-short-key-request.http"))
    write(t, "captured-curl-then-frame", bytes([0]) + captured("curl-7.88-request.http")
          + frame(TEXT, b"Hello", mask=MASKS[0]))
    write(t, "captured-chromium-then-frames", bytes([0]) + captured("chromium-148-request.http")
          + captured("chromium-148-frames.bin"))
    safari = [
        "GET /ws HTTP/1.1", "Host: example.com", "Upgrade: websocket", "Connection: Upgrade",
        "Origin: https://example.com", "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Extensions: permessage-deflate",
        "User-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/18.1 Safari/605.1.15",
        "Pragma: no-cache", "Cache-Control: no-cache", "Accept-Language: en-GB,en;q=0.9",
        "Accept-Encoding: gzip, deflate"]
    write(t, "safari-like", req(safari))
    tungstenite = ["GET /socket HTTP/1.1", "Host: localhost:3012", "Connection: Upgrade",
                   "Upgrade: websocket", "Sec-WebSocket-Version: 13",
                   "Sec-WebSocket-Key: NsNlWvqXzJhdCZRwHjzkTQ=="]
    write(t, "tungstenite-like", req(tungstenite))
    proxied = ["GET /ws HTTP/1.1", "host: backend", "upgrade: websocket", "connection: upgrade",
               "x-real-ip: 203.0.113.7", "x-forwarded-for: 203.0.113.7",
               "x-forwarded-proto: https", "sec-websocket-version: 13",
               "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
               "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; "
               "client_no_context_takeover; server_max_window_bits=10, permessage-deflate",
               "sec-websocket-protocol: v2.duplex, v1.duplex"]
    write(t, "nginx-proxied-lowercase", req(proxied))
    write(t, "bare-line-feeds", bytes([0]) + "\n".join(tungstenite).encode() + b"\n\n")
    # Refusals, each for a different rule.
    write(t, "post", req(["POST /chat HTTP/1.1"] + rfc[1:]))
    write(t, "http10", req(["GET /chat HTTP/1.0"] + rfc[1:]))
    write(t, "missing-host", req([rfc[0]] + rfc[2:]))
    write(t, "two-hosts", req(rfc + ["Host: other.example.com"]))
    write(t, "plain-http", req(["GET / HTTP/1.1", "Host: example.com", "Accept: text/html"]))
    write(t, "no-connection-upgrade", req([l for l in rfc if not l.startswith("Connection")]))
    write(t, "version-8", req([l for l in rfc if "Version" not in l] + ["Sec-WebSocket-Version: 8"]))
    write(t, "short-key", req([l for l in rfc if "Key" not in l] + ["Sec-WebSocket-Key: c2hvcnQ="]))
    write(t, "two-keys", req(rfc + ["Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA=="]))
    write(t, "bad-origin", req([l for l in rfc if "Origin" not in l] + ["Origin: http://a b"]))
    write(t, "bad-protocol", req(rfc + ["Sec-WebSocket-Protocol: chat room"]))
    write(t, "bad-extension", req(rfc + ["Sec-WebSocket-Extensions: permessage-deflate; ;="]))
    write(t, "absolute-uri", req(["GET ws://server.example.com/chat HTTP/1.1"] + rfc[1:]))
    write(t, "garbage-request-line", req(["GET /chat HTTP/1.1 extra"] + rfc[1:]))
    write(t, "obs-fold", req(rfc[:2] + ["X-Folded: a", " b"] + rfc[2:]))
    write(t, "too-many-headers",
          req(rfc + ["X-Pad-%d: %d" % (i, i) for i in range(10)], flags=0x02))
    write(t, "incomplete", req(rfc)[:-2])


def handshake_responses():
    t = "handshake_response"

    def resp(lines, flags=0, extra=b""):
        return bytes([flags]) + ("\r\n".join(lines) + "\r\n\r\n").encode() + extra

    ok = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
          "Sec-WebSocket-Accept: {ACCEPT}"]
    write(t, "rfc6455", resp(ok + ["Sec-WebSocket-Protocol: chat"]))
    write(t, "rfc6455-bytewise", resp(ok, flags=8 << 2))
    write(t, "rfc6455-then-frame", resp(ok, extra=frame(TEXT, b"Hello")))
    write(t, "deflate", resp(ok + ["Sec-WebSocket-Extensions: permessage-deflate"]))
    write(t, "deflate-params", resp(ok + [
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
        "client_max_window_bits=10; server_max_window_bits=12"]))
    write(t, "deflate-not-offered", resp(ok + ["Sec-WebSocket-Extensions: permessage-deflate"],
                                         flags=0x01))
    # Real responses to a request offering `chat, superchat` (and deflate where named), with the
    # accept value for the RFC 6455 example key replaced by the placeholder.
    for name in ["python-websockets-17.4", "python-websockets-17.4-deflate", "node-ws",
                 "node-ws-deflate"]:
        head = captured(name + "-response.http").replace(
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", b"{ACCEPT}")
        assert b"{ACCEPT}" in head
        write(t, "captured-" + name, bytes([0]) + head)
        write(t, "captured-%s-bytewise" % name, bytes([8 << 2]) + head)
    write(t, "nginx", resp(["HTTP/1.1 101 Switching Protocols", "Server: nginx/1.27.3",
                            "Date: Mon, 11 Nov 2024 08:00:00 GMT", "Connection: upgrade",
                            "upgrade: websocket", "sec-websocket-accept: {ACCEPT}"]))
    write(t, "set-cookie", resp(ok + ["Set-Cookie: sid=1; HttpOnly", "Set-Cookie: theme=dark"]))
    write(t, "rfc-example-accept", resp(ok[:3] + ["Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]))
    write(t, "two-accepts", resp(ok + ["Sec-WebSocket-Accept: {ACCEPT}"]))
    write(t, "protocol-not-offered", resp(ok + ["Sec-WebSocket-Protocol: mqtt"]))
    write(t, "protocol-without-offer", resp(ok + ["Sec-WebSocket-Protocol: chat"], flags=0x01))
    write(t, "extension-not-offered", resp(ok + ["Sec-WebSocket-Extensions: x-webkit-deflate-frame"]))
    write(t, "missing-upgrade", resp([l for l in ok if not l.startswith("Upgrade")]))
    write(t, "http10-101", resp(["HTTP/1.0 101 Switching Protocols"] + ok[1:]))
    write(t, "forbidden", resp(["HTTP/1.1 403 Forbidden", "Content-Type: text/plain",
                                "Content-Length: 9"], extra=b"forbidden"))
    write(t, "redirect", resp(["HTTP/1.1 302 Found", "Location: wss://example.com/chat",
                               "Content-Length: 0"]))
    write(t, "upgrade-required", resp(["HTTP/1.1 426 Upgrade Required",
                                       "Sec-WebSocket-Version: 13", "Upgrade: websocket",
                                       "Connection: Upgrade, close"]))
    write(t, "status-200", resp(["HTTP/1.1 200 OK", "Content-Length: 2"], extra=b"hi"))
    write(t, "bad-status", resp(["HTTP/1.1 1010 Weird"] + ok[1:]))
    write(t, "incomplete", resp(ok)[:-2])


def extension_seeds():
    t = "extensions"

    def ext(values, client=0, server=0):
        return bytes([client, server]) + "\n".join(values).encode()

    write(t, "chromium", ext(["permessage-deflate; client_max_window_bits"]))
    write(t, "firefox", ext(["permessage-deflate"]))
    write(t, "all-params", ext(["permessage-deflate; client_max_window_bits=10; "
                                "server_max_window_bits=12; server_no_context_takeover; "
                                "client_no_context_takeover"], client=0x0F, server=0x0C))
    write(t, "quoted-value", ext(['permessage-deflate; client_max_window_bits="10"']))
    write(t, "fallback-offers", ext(["permessage-deflate; server_max_window_bits=10, "
                                     "permessage-deflate; client_max_window_bits, "
                                     "permessage-deflate"], server=0x25))
    write(t, "two-header-lines", ext(["x-webkit-deflate-frame", "permessage-deflate"]))
    write(t, "unknown-first", ext(["foo, bar; baz=1, permessage-deflate"]))
    write(t, "server-answer", ext(["permessage-deflate; server_no_context_takeover; "
                                   "client_max_window_bits=15"], client=0x09))
    write(t, "server-policy-strict", ext(["permessage-deflate; client_max_window_bits"],
                                         client=0x03, server=0xFF))
    write(t, "window-16", ext(["permessage-deflate; server_max_window_bits=16"]))
    write(t, "window-7", ext(["permessage-deflate; client_max_window_bits=7"]))
    write(t, "window-leading-zero", ext(["permessage-deflate; server_max_window_bits=010"]))
    write(t, "duplicate-param", ext(["permessage-deflate; server_no_context_takeover; "
                                     "server_no_context_takeover"]))
    write(t, "value-on-flag", ext(["permessage-deflate; server_no_context_takeover=1"]))
    write(t, "unknown-param", ext(["permessage-deflate; max_window=1"]))
    write(t, "empty-elements", ext([" , ,permessage-deflate ; ; , "]))
    write(t, "bad-quotes", ext(['permessage-deflate; client_max_window_bits="10']))
    write(t, "escaped-quote", ext(['permessage-deflate; a="\\"x\\""']))
    write(t, "non-ascii", ext(["permessage-deflate; é=1"]))


def frame_header_seeds():
    t = "frame_header"
    write(t, "rfc-hello", frame(TEXT, b"Hello"))
    write(t, "rfc-masked-hello", frame(TEXT, b"Hello", mask=MASKS[0]))
    write(t, "rfc-fragment-1", frame(TEXT, b"Hel", fin=False))
    write(t, "rfc-fragment-2", frame(CONT, b"lo"))
    write(t, "rfc-ping", frame(PING, b"Hello"))
    write(t, "rfc-masked-pong", frame(PONG, b"Hello", mask=MASKS[0]))
    write(t, "rfc-256", frame(BINARY, bytes(range(256))))
    write(t, "rfc-64k-header", bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]) + b"payload")
    write(t, "top-bit-length", bytes([0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]))
    write(t, "masked-64bit", frame(BINARY, b"abc", mask=MASKS[1], len_form=64))
    write(t, "rfc7692-compressed", frame(TEXT, RFC_HELLO, rsv1=True))
    write(t, "all-rsv", bytes([0xF2, 0x00]))
    write(t, "truncated", bytes([0x81, 0xFE, 0x01]))


def inflate_seeds():
    t = "inflate"

    def inf(frames, flags=0x01, bits=0x3F, limit=0xFF):
        out = bytes([flags, bits, limit])
        for data, fin in frames:
            out += struct.pack(">H", len(data) | (0x8000 if fin else 0)) + data
        return out

    write(t, "rfc-hello", inf([(RFC_HELLO, True)]))
    write(t, "rfc-hello-fragmented", inf([(RFC_HELLO[:3], False), (RFC_HELLO[3:], True)]))
    write(t, "rfc-shared-context", inf([(RFC_HELLO, True), (RFC_HELLO_AGAIN, True)]))
    write(t, "rfc-stored-block", inf([(RFC_HELLO_STORED, True)], flags=0x00))
    write(t, "rfc-bfinal", inf([(RFC_HELLO_BFINAL, True), (RFC_HELLO, True)], flags=0x07))
    write(t, "empty-message", inf([(b"\x00", True)]))
    for level in (1, 6, 9):
        d = Deflater(level=level)
        write(t, "json-1k-level-%d" % level,
              inf([(d.message(JSON_1K), True), (d.message(JSON_1K), True)],
                  flags=0x01 | (level << 4), limit=0x40))
    d = Deflater(level=6, wbits=9, no_context_takeover=True)
    write(t, "json-window-9", inf([(d.message(JSON), True)], flags=0x07, bits=0x09, limit=0x10))
    c = Deflater(level=6).message(JSON_1K)
    write(t, "json-in-many-frames",
          inf([(c[i:i + 7], i + 7 >= len(c)) for i in range(0, len(c), 7)], limit=0x41))
    bomb = Deflater(level=9).message(bytes(100_000))
    write(t, "bomb-small-limit", inf([(bomb, True)], limit=0x04))
    write(t, "bomb-limit-zero", inf([(bomb, True)], limit=0x00))
    write(t, "garbage", inf([(b"\xff\xfe\xfd\xfc", True)]))
    write(t, "truncated-stream", inf([(c[: len(c) // 2], True)]))
    write(t, "roundtrip-only", bytes([0x30, 0x3F, 0xFF]) + JSON)
    # Compressed payloads from real peers: browsers' messages inflated by a server, and
    # python websockets' (12-bit windows) inflated by a client.
    for name, role_flag, bits in [("chromium-148-frames.bin", 0x01, 0x3F),
                                  ("firefox-140-frames.bin", 0x01, 0x3F),
                                  ("node-ws-deflate-frames.bin", 0x00, 0x3F),
                                  ("python-websockets-17.4-deflate-frames.bin", 0x00, 0x24)]:
        frames = [(p, fin) for fin, rsv1, op, p in parse_frames(captured(name)) if rsv1]
        assert frames, name
        write(t, "captured-" + name.replace("-frames.bin", "").replace(".bin", ""),
              inf(frames, flags=role_flag, bits=bits))


def main():
    connection_seeds("server_connection", lambda i: MASKS[i % len(MASKS)])
    connection_seeds("client_connection", lambda i: None)
    frame_header_seeds()
    handshake_requests()
    handshake_responses()
    extension_seeds()
    inflate_seeds()


if __name__ == "__main__":
    main()
