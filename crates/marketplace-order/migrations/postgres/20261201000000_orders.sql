-- Orders and their lines, each line with the catalog's unit price when the
-- order was placed. Money is NUMERIC(15,2): exact, as in the seed schema.
CREATE TABLE orders (
    id VARCHAR PRIMARY KEY,
    account_id VARCHAR NOT NULL,
    total_price NUMERIC(15, 2) NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX orders_account_id_created_at ON orders (account_id, created_at DESC);

CREATE TABLE order_items (
    order_id VARCHAR NOT NULL REFERENCES orders (id),
    product_id VARCHAR NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    price NUMERIC(15, 2) NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
