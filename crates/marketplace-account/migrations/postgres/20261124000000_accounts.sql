-- The seed's accounts table. IF NOT EXISTS adopts a database the Go
-- original already created (without sqlx's bookkeeping table).
CREATE TABLE IF NOT EXISTS accounts (
    id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The seed declared created_at as TIMESTAMP without a time zone, holding UTC
-- (the Go original wrote CURRENT_TIMESTAMP on UTC servers); an adopted table
-- is converted so that every instant reads back unambiguously.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM information_schema.columns
        WHERE table_schema = current_schema()
          AND table_name = 'accounts'
          AND column_name = 'created_at'
          AND data_type = 'timestamp without time zone'
    ) THEN
        ALTER TABLE accounts
            ALTER COLUMN created_at TYPE TIMESTAMPTZ USING created_at AT TIME ZONE 'UTC';
    END IF;
END
$$;

-- ListAccounts pages through accounts in this order.
CREATE INDEX IF NOT EXISTS accounts_created_at_id ON accounts (created_at, id);
