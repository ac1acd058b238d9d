#!/usr/bin/env python3
"""The demo app: a tiny HTTP server that says which Baton node serves it.

Baton starts it with BATON_APP, BATON_NODE and BATON_EPOCH (the fencing token) in the
environment; DEMO_PORT picks the port (default 8080). Only the active node runs it, so every
node can use the same port on one machine.
"""
import http.server
import os
import signal
import sys

PORT = int(os.environ.get("DEMO_PORT", "8080"))
NODE = os.environ.get("BATON_NODE", "?")
EPOCH = os.environ.get("BATON_EPOCH", "?")
APP = os.environ.get("BATON_APP", "?")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{APP} served by {NODE} (epoch {EPOCH})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{APP} listening on 127.0.0.1:{PORT} as {NODE}, epoch {EPOCH}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
