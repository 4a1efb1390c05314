"""Records a WebSocket server's 101 response and first frames (see README.md).

    python3 grab_response.py PORT NAME ["Sec-WebSocket-Extensions: ..."]

Writes raw/resp_NAME.head and raw/resp_NAME.frames.
"""
import os, socket, sys, time
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "raw")
os.makedirs(OUT, exist_ok=True)
port, name = int(sys.argv[1]), sys.argv[2]
ext = sys.argv[3] if len(sys.argv) > 3 else ""
s = socket.create_connection(("127.0.0.1", port))
req = ("GET /chat HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
       "Sec-WebSocket-Protocol: chat, superchat\r\n%s\r\n") % (port, (ext + "\r\n") if ext else "")
s.sendall(req.encode())
time.sleep(0.7)
data = s.recv(65536)
head, _, frames = data.partition(b"\r\n\r\n")
open(os.path.join(OUT, "resp_%s.head" % name), "wb").write(head + b"\r\n\r\n")
open(os.path.join(OUT, "resp_%s.frames" % name), "wb").write(frames)
print(name, len(head), len(frames))
