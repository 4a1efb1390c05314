"""Records WebSocket client handshakes and first frames (see README.md).

    python3 capture_server.py [SECONDS]   # then point a client at ws://127.0.0.1:8765/NAME

Each connection's request head goes to raw/NAME.head and what the client sends after the 101
to raw/NAME.frames; a plain GET gets a page that opens a WebSocket from a browser.
"""
import asyncio, base64, hashlib, sys, os
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "raw")
os.makedirs(OUT, exist_ok=True)
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
async def handle(reader, writer):
    head = await reader.readuntil(b"\r\n\r\n")
    path = head.split(b" ")[1].decode()
    name = path.strip("/").replace("/", "_") or "root"
    open(f"{OUT}/{name}.head", "wb").write(head)
    key = None
    extra = b""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"sec-websocket-key:"):
            key = line.split(b":", 1)[1].strip()
        if line.lower().startswith(b"sec-websocket-protocol:"):
            extra += b"Sec-WebSocket-Protocol: " + line.split(b":", 1)[1].split(b",")[0].strip() + b"\r\n"
        if line.lower().startswith(b"sec-websocket-extensions:") and b"permessage-deflate" in line:
            extra += b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
    if key is None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(PAGE) + PAGE)
        await writer.drain(); writer.close(); return
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n" + extra + b"\r\n")
    await writer.drain()
    data = b""
    while True:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), 1.0)
        except Exception:
            break
        if not chunk:
            break
        data += chunk
    open(f"{OUT}/{name}.frames", "wb").write(data)
    writer.close()
PAGE = b"""<!doctype html><script>
const ws = new WebSocket("ws://" + location.host + "/" + (navigator.userAgent.includes("Firefox") ? "firefox" : "chromium") + "?room=lobby", ["duplex.v1"]);
ws.onopen = () => { ws.send("Hello from the browser"); ws.send(new Uint8Array([1,2,3,4])); ws.send(JSON.stringify({channel:"room:lobby",data:{user:"alice",text:"hello everyone"}}).repeat(3)); };
</script>"""
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", 8765)
    async with srv:
        await asyncio.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 120)
asyncio.run(main())
