-- The seed's accounts table in SQLite. created_at is whole microseconds
-- since the Unix epoch (UTC): an integer sorts and compares exactly, where
-- text would depend on its formatting.
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- ListAccounts pages through accounts in this order.
CREATE INDEX IF NOT EXISTS accounts_created_at_id ON accounts (created_at, id);
