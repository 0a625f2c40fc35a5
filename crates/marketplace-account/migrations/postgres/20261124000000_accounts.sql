-- The seed's accounts table. IF NOT EXISTS adopts a database the seed
-- already created without sqlx's bookkeeping table.
CREATE TABLE IF NOT EXISTS accounts (
    id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- ListAccounts pages through accounts in this order.
CREATE INDEX IF NOT EXISTS accounts_created_at_id ON accounts (created_at, id);
