// The catalog (names, record and chunk formats, the history bucket's records, snapshot
// metadata) is part of this module's API: every client of Replication sees it, as before the
// split. Clients that only read what is in NATS (batonctl, Permissions) import
// ReplicationCatalog alone and so do not link SQLite.
@_exported import ReplicationCatalog
