/// The store's schema, as numbered migrations: a store is at the version of the last one
/// it ran (`PRAGMA user_version` in SQLite, a table in PostgreSQL), and the hub runs the
/// rest at start. A store at a version above ``latest`` was written by a newer hub and is
/// refused. One text for both databases: SQLite reads BIGINT as INTEGER and DOUBLE
/// PRECISION as REAL (PostgreSQL's REAL would be 4 bytes, too few for a timestamp).
enum StoreSchema {
    static let migrations: [[String]] = [
        // 1: managed keys, the ledger, hourly usage, and a change counter for keys.
        [
            """
            CREATE TABLE keys (
                id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, digest TEXT NOT NULL UNIQUE, models TEXT,
                rpm BIGINT, tpm BIGINT, budget_tokens BIGINT, budget_period TEXT, budget_hard BIGINT,
                parallel BIGINT, created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION, revoked_at DOUBLE PRECISION)
            """,
            """
            CREATE TABLE ledger (
                at DOUBLE PRECISION NOT NULL, request_id TEXT NOT NULL, subject TEXT NOT NULL, model TEXT, worker TEXT,
                outcome TEXT NOT NULL, status BIGINT NOT NULL, code TEXT, prompt_tokens BIGINT NOT NULL,
                completion_tokens BIGINT NOT NULL, cached_tokens BIGINT NOT NULL, ttft_ms DOUBLE PRECISION,
                duration_ms DOUBLE PRECISION NOT NULL)
            """,
            "CREATE INDEX ledger_at ON ledger (at)",
            """
            CREATE TABLE usage_hourly (
                hour BIGINT NOT NULL, subject TEXT NOT NULL, model TEXT NOT NULL, requests BIGINT NOT NULL,
                errors BIGINT NOT NULL, prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL,
                cached_tokens BIGINT NOT NULL, PRIMARY KEY (hour, subject, model))
            """,
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
            "INSERT INTO meta (name, value) VALUES ('keys_generation', 0)",
        ],
        // 2: the hubs sharing the store, each seen at its last sync (they split rate limits).
        [
            "CREATE TABLE hubs (id TEXT PRIMARY KEY, seen_at DOUBLE PRECISION NOT NULL)",
        ],
        // 3: hub-managed models (their desired state and placement, a JSON document each, with
        // a revision for compare-and-set between hubs), and a change counter for them.
        [
            "CREATE TABLE models (name TEXT PRIMARY KEY, document TEXT NOT NULL, revision BIGINT NOT NULL)",
            "INSERT INTO meta (name, value) VALUES ('models_generation', 0)",
        ],
    ]

    static var latest: Int { migrations.count }
}
