#!/usr/bin/env python3
"""The demo app: a tiny HTTP server that says which Baton node serves it and counts visits.

Baton starts it with BATON_APP, BATON_NODE and BATON_EPOCH (the fencing token) in the
environment; DEMO_PORT picks the port (default 8080). Only the active node runs it, so every
node can use the same port on one machine. With DEMO_DB set, every visit is a transaction in
that SQLite database (WAL mode, as Baton's replication requires): Baton ships it to the other
nodes, so the count goes on where it left off after a switchover or a crash.

With DEMO_LEDGER set, every visit is also written to that database, which stands for a
system downstream of the app that all nodes share. It remembers the highest BATON_EPOCH that
wrote to it and refuses, with HTTP 409, a write under an older one: what protects such a
system when a frozen host resumes with its backend still running for a moment.
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
LEDGER_PATH = os.environ.get("DEMO_LEDGER")
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


class StaleEpoch(Exception):
    pass


def record_in_ledger(count):
    """Writes the visit to the shared ledger under this epoch; raises StaleEpoch when a newer
    epoch has written there already. The epoch check and the write are one transaction."""
    if not LEDGER_PATH:
        return
    ledger = sqlite3.connect(LEDGER_PATH, isolation_level=None, timeout=5)
    try:
        ledger.execute("CREATE TABLE IF NOT EXISTS fence(app TEXT PRIMARY KEY, epoch INTEGER NOT NULL)")
        ledger.execute("CREATE TABLE IF NOT EXISTS ledger(id INTEGER PRIMARY KEY, app TEXT, node TEXT, epoch INTEGER, visit INTEGER)")
        ledger.execute("BEGIN IMMEDIATE")
        changed = ledger.execute(
            "INSERT INTO fence(app, epoch) VALUES (?, ?) "
            "ON CONFLICT(app) DO UPDATE SET epoch = excluded.epoch WHERE excluded.epoch >= fence.epoch",
            (APP, int(EPOCH)),
        ).rowcount
        if changed == 0:
            (newer,) = ledger.execute("SELECT epoch FROM fence WHERE app = ?", (APP,)).fetchone()
            ledger.execute("ROLLBACK")
            raise StaleEpoch(f"epoch {EPOCH} is older than epoch {newer}, which already wrote to the ledger")
        ledger.execute("INSERT INTO ledger(app, node, epoch, visit) VALUES (?, ?, ?, ?)", (APP, NODE, int(EPOCH), count))
        ledger.execute("COMMIT")
    finally:
        ledger.close()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        count = record_visit() if self.path != "/health" else None
        if count is not None:
            try:
                record_in_ledger(count)
            except StaleEpoch as refusal:
                body = f"{APP} on {NODE}: write refused: {refusal}\n".encode()
                self.send_response(409)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
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
