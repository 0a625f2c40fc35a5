-- The PostgreSQL schema for embedded use: money as INTEGER minor units,
-- timestamps as INTEGER microseconds since the Unix epoch.
CREATE TABLE orders (
    id TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL,
    total_price INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE INDEX orders_account_id_created_at ON orders (account_id, created_at DESC);

CREATE TABLE order_items (
    order_id TEXT NOT NULL REFERENCES orders (id),
    product_id TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    price INTEGER NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
