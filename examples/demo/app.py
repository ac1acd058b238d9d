#!/usr/bin/env python3
"""The demo app: a tiny HTTP server that says which Baton node serves it and counts visits.

Baton starts it with BATON_APP, BATON_NODE and BATON_EPOCH (the fencing token) in the
environment; DEMO_PORT picks the port (default 8080). Only the active node runs it, so every
node can use the same port on one machine. With DEMO_DB set, every visit is a transaction in
that SQLite database (WAL mode, as Baton's replication requires): Baton ships it to the other
nodes, so the count goes on where it left off after a switchover or a crash.
"""
import http.server
import os
import signal
import sqlite3
import sys
import threading

PORT = int(os.environ.get("DEMO_PORT", "8080"))
NODE = os.environ.get("BATON_NODE", "?")
EPOCH = os.environ.get("BATON_EPOCH", "?")
APP = os.environ.get("BATON_APP", "?")
DB_PATH = os.environ.get("DEMO_DB")
DB_LOCK = threading.Lock()
DB = None


def open_database():
    database = sqlite3.connect(DB_PATH, check_same_thread=False, isolation_level=None)
    database.execute("PRAGMA busy_timeout = 5000")
    database.execute("PRAGMA journal_mode = WAL")
    database.execute("CREATE TABLE IF NOT EXISTS visits(id INTEGER PRIMARY KEY, node TEXT, epoch TEXT)")
    return database


def record_visit():
    """Commits one visit and returns how many there were, or None without a database."""
    if DB is None:
        return None
    with DB_LOCK:
        DB.execute("BEGIN IMMEDIATE")
        DB.execute("INSERT INTO visits(node, epoch) VALUES (?, ?)", (NODE, EPOCH))
        (count,) = DB.execute("SELECT count(*) FROM visits").fetchone()
        DB.execute("COMMIT")
        return count


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        count = record_visit() if self.path != "/health" else None
        visit = f", visit {count}" if count is not None else ""
        body = f"{APP} served by {NODE} (epoch {EPOCH}){visit}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def main():
    global DB
    if DB_PATH:
        DB = open_database()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{APP} listening on 127.0.0.1:{PORT} as {NODE}, epoch {EPOCH}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
