//! The README's GraphQL walk-through, checked field by field, and every
//! kind of bad input the services refuse, sent through GraphQL.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::Graphql;

const CREATE_ACCOUNT: &str =
    "mutation($account: AccountInput!) { createAccount(account: $account) { id name createdAt } }";
const CREATE_PRODUCT: &str = "mutation($product: ProductInput!) { createProduct(product: $product) { id name description price createdAt } }";
const SEARCH: &str =
    "query($query: String) { products(query: $query) { id name description price } }";
const CREATE_ORDER: &str = "mutation($order: OrderInput!) { createOrder(order: $order) { id accountId createdAt totalPrice products { id name description price quantity } } }";
const ACCOUNT_ORDERS: &str = "query($id: String) { accounts(id: $id) { id name orders { id accountId createdAt totalPrice products { id name description price quantity } } } }";

fn time(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is a string"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|error| panic!("{text} is RFC 3339: {error}"))
        .with_timezone(&Utc)
}

fn assert_recent(value: &Value, before: DateTime<Utc>) {
    let at = time(value);
    let after = Utc::now();
    assert!(
        before <= at && at <= after,
        "{at} is between {before} and {after}"
    );
}

fn assert_ksuid(value: &Value) -> String {
    let id = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is a string"));
    assert_eq!(id.len(), 27, "{id} is a KSUID");
    assert!(id.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
    id.to_owned()
}

/// Create an account and two products, search, place an order, read the
/// account's orders: every field of every answer is checked.
pub fn walkthrough(graphql: &Graphql) {
    let started = Utc::now();

    let account = graphql.data(
        CREATE_ACCOUNT,
        json!({ "account": { "name": "Ada Lovelace" } }),
    )["createAccount"]
        .clone();
    let account_id = assert_ksuid(&account["id"]);
    assert_eq!(account["name"], "Ada Lovelace");
    assert_recent(&account["createdAt"], started);

    let engine = graphql.data(
        CREATE_PRODUCT,
        json!({ "product": {
            "name": "Analytical engine",
            "description": "A general-purpose mechanical computer",
            "price": 1843.99,
        }}),
    )["createProduct"]
        .clone();
    let engine_id = assert_ksuid(&engine["id"]);
    assert_eq!(engine["name"], "Analytical engine");
    assert_eq!(
        engine["description"],
        "A general-purpose mechanical computer"
    );
    assert_eq!(engine["price"], 1843.99);
    assert_recent(&engine["createdAt"], started);

    let cards = graphql.data(
        CREATE_PRODUCT,
        json!({ "product": {
            "name": "Punched cards",
            "description": "Programs and data for the engine, a box of 100",
            "price": 0.1,
        }}),
    )["createProduct"]
        .clone();
    let cards_id = assert_ksuid(&cards["id"]);
    assert_eq!(cards["price"], 0.1);

    // Names weigh more than descriptions: the engine comes first.
    let found = graphql.data(SEARCH, json!({ "query": "engine" }))["products"].clone();
    assert_eq!(
        found,
        json!([
            { "id": engine_id, "name": "Analytical engine",
              "description": "A general-purpose mechanical computer", "price": 1843.99 },
            { "id": cards_id, "name": "Punched cards",
              "description": "Programs and data for the engine, a box of 100", "price": 0.1 },
        ])
    );
    let found = graphql.data(SEARCH, json!({ "query": "box" }))["products"].clone();
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(found[0]["id"], cards_id.as_str());

    let before_order = Utc::now();
    let order = graphql.data(
        CREATE_ORDER,
        json!({ "order": {
            "accountId": account_id,
            "products": [
                { "id": engine_id, "quantity": 2 },
                { "id": cards_id, "quantity": 3 },
            ],
        }}),
    )["createOrder"]
        .clone();
    let order_id = assert_ksuid(&order["id"]);
    assert_eq!(order["accountId"], account_id.as_str());
    assert_recent(&order["createdAt"], before_order);
    // 2 x 1843.99 + 3 x 0.10, exactly.
    assert_eq!(order["totalPrice"], 3688.28);
    // Lines come ordered by product id, whatever order they were sent in.
    let mut lines = vec![
        json!({ "id": engine_id, "name": "Analytical engine",
                "description": "A general-purpose mechanical computer",
                "price": 1843.99, "quantity": 2 }),
        json!({ "id": cards_id, "name": "Punched cards",
                "description": "Programs and data for the engine, a box of 100",
                "price": 0.1, "quantity": 3 }),
    ];
    lines.sort_by_key(|line| line["id"].as_str().map(str::to_owned));
    assert_eq!(order["products"], Value::Array(lines));

    let accounts = graphql.data(ACCOUNT_ORDERS, json!({ "id": account_id }))["accounts"].clone();
    assert_eq!(
        accounts,
        json!([{ "id": account_id, "name": "Ada Lovelace", "orders": [order.clone()] }])
    );

    let by_id = graphql.data(
        "query($id: String!) { order(id: $id) { id accountId createdAt totalPrice products { id name description price quantity } } }",
        json!({ "id": order_id }),
    )["order"]
        .clone();
    assert_eq!(by_id, order);

    let product = graphql.data(
        "query($id: String) { products(id: $id) { id name description price createdAt } }",
        json!({ "id": engine_id }),
    )["products"]
        .clone();
    assert_eq!(product, json!([engine]));
}

/// Money stays exact from the catalog to the order's total.
pub fn totals_are_exact(graphql: &Graphql) {
    let account = graphql.data(CREATE_ACCOUNT, json!({ "account": { "name": "Exact" } }))
        ["createAccount"]["id"]
        .clone();
    let lines: Vec<Value> = [(0.1, 3), (0.2, 3), (0.7, 1)]
        .iter()
        .enumerate()
        .map(|(i, (price, quantity))| {
            let product = graphql.data(
                CREATE_PRODUCT,
                json!({ "product": { "name": format!("Coin {i}"), "description": "change", "price": price } }),
            );
            json!({ "id": product["createProduct"]["id"], "quantity": quantity })
        })
        .collect();

    let order = graphql.data(
        CREATE_ORDER,
        json!({ "order": { "accountId": account, "products": lines } }),
    );

    assert_eq!(order["createOrder"]["totalPrice"], 1.6);
}

/// Every kind of bad input the services refuse comes back with its code
/// and a message naming the problem; text that looks like SQL or query
/// syntax is stored and searched as text.
pub fn bad_inputs(graphql: &Graphql) {
    let account =
        graphql.data(CREATE_ACCOUNT, json!({ "account": { "name": "Checker" } }))["createAccount"]
            ["id"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default();
    let product = graphql.data(
        CREATE_PRODUCT,
        json!({ "product": { "name": "Widget", "description": "A widget", "price": 2.5 } }),
    )["createProduct"]["id"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    let unknown = "0ujtsYcgvSTl8PAuAdqWYSMnLOv";
    let long = "x".repeat(201);

    let create_account =
        |name: &str| graphql.error(CREATE_ACCOUNT, json!({ "account": { "name": name } }));
    let create_product = |name: &str, description: &str, price: f64| {
        graphql.error(
            CREATE_PRODUCT,
            json!({ "product": { "name": name, "description": description, "price": price } }),
        )
    };
    let create_order = |account: &str, products: Value| {
        graphql.error(
            CREATE_ORDER,
            json!({ "order": { "accountId": account, "products": products } }),
        )
    };
    let many_lines: Vec<Value> = (0..101)
        .map(|_| json!({ "id": unknown, "quantity": 1 }))
        .collect();

    let cases: Vec<(&str, (String, String), &str, &str)> = vec![
        (
            "empty account name",
            create_account(""),
            "BAD_USER_INPUT",
            "name",
        ),
        (
            "blank account name",
            create_account("   "),
            "BAD_USER_INPUT",
            "name",
        ),
        (
            "over-long account name",
            create_account(&long),
            "BAD_USER_INPUT",
            "name",
        ),
        (
            "control character in a name",
            create_account("Ada\u{7}"),
            "BAD_USER_INPUT",
            "name",
        ),
        (
            "blank product name",
            create_product(" ", "ok", 1.0),
            "BAD_USER_INPUT",
            "name",
        ),
        (
            "blank description",
            create_product("ok", "\n", 1.0),
            "BAD_USER_INPUT",
            "description",
        ),
        (
            "negative price",
            create_product("ok", "ok", -1.0),
            "BAD_USER_INPUT",
            "negative",
        ),
        (
            "price with three decimals",
            create_product("ok", "ok", 0.105),
            "BAD_USER_INPUT",
            "decimal",
        ),
        (
            "price too large",
            create_product("ok", "ok", 1e300),
            "BAD_USER_INPUT",
            "maximum",
        ),
        (
            "malformed account id",
            graphql.error("{ accounts(id: \"nope\") { id } }", json!({})),
            "BAD_USER_INPUT",
            "nope",
        ),
        (
            "unknown account id",
            graphql.error(
                &format!("{{ accounts(id: \"{unknown}\") {{ id }} }}"),
                json!({}),
            ),
            "NOT_FOUND",
            unknown,
        ),
        (
            "malformed product id",
            graphql.error("{ products(id: \"nope\") { id } }", json!({})),
            "BAD_USER_INPUT",
            "nope",
        ),
        (
            "unknown product id",
            graphql.error(
                &format!("{{ products(id: \"{unknown}\") {{ id }} }}"),
                json!({}),
            ),
            "NOT_FOUND",
            unknown,
        ),
        (
            "malformed order id",
            graphql.error("{ order(id: \"nope\") { id } }", json!({})),
            "BAD_USER_INPUT",
            "nope",
        ),
        (
            "unknown order id",
            graphql.error(
                &format!("{{ order(id: \"{unknown}\") {{ id }} }}"),
                json!({}),
            ),
            "NOT_FOUND",
            unknown,
        ),
        (
            "negative skip",
            graphql.error("{ products(pagination: {skip: -1}) { id } }", json!({})),
            "BAD_USER_INPUT",
            "skip",
        ),
        (
            "take above the cap",
            graphql.error("{ accounts(pagination: {take: 101}) { id } }", json!({})),
            "BAD_USER_INPUT",
            "take",
        ),
        (
            "negative take",
            graphql.error("{ products(pagination: {take: -1}) { id } }", json!({})),
            "BAD_USER_INPUT",
            "take",
        ),
        (
            "order for an unknown account",
            create_order(unknown, json!([{ "id": product, "quantity": 1 }])),
            "NOT_FOUND",
            unknown,
        ),
        (
            "order of an unknown product",
            create_order(&account, json!([{ "id": unknown, "quantity": 1 }])),
            "NOT_FOUND",
            unknown,
        ),
        (
            "order with a malformed product id",
            create_order(&account, json!([{ "id": "nope", "quantity": 1 }])),
            "BAD_USER_INPUT",
            "nope",
        ),
        (
            "order with a malformed account id",
            create_order("nope", json!([{ "id": product, "quantity": 1 }])),
            "BAD_USER_INPUT",
            "nope",
        ),
        (
            "empty order",
            create_order(&account, json!([])),
            "BAD_USER_INPUT",
            "line",
        ),
        (
            "duplicate product lines",
            create_order(
                &account,
                json!([{ "id": product, "quantity": 1 }, { "id": product, "quantity": 2 }]),
            ),
            "BAD_USER_INPUT",
            &product,
        ),
        (
            "quantity 0",
            create_order(&account, json!([{ "id": product, "quantity": 0 }])),
            "BAD_USER_INPUT",
            "quantity",
        ),
        (
            "negative quantity",
            create_order(&account, json!([{ "id": product, "quantity": -3 }])),
            "BAD_USER_INPUT",
            "quantity",
        ),
        (
            "quantity above the maximum",
            create_order(&account, json!([{ "id": product, "quantity": 1001 }])),
            "BAD_USER_INPUT",
            "quantity",
        ),
        (
            "more lines than an order may have",
            create_order(&account, Value::Array(many_lines)),
            "BAD_USER_INPUT",
            "100",
        ),
    ];
    let mut failures = Vec::new();
    for (case, (code, message), expected_code, mentions) in cases {
        if code != expected_code || !message.contains(mentions) {
            failures.push(format!(
                "{case}: got {code} {message:?}, expected {expected_code} mentioning {mentions:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let injected = "'; DROP TABLE accounts; --";
    let stored =
        graphql.data(CREATE_ACCOUNT, json!({ "account": { "name": injected } }))["createAccount"]
            .clone();
    let read = graphql.data(
        "query($id: String) { accounts(id: $id) { name } }",
        json!({ "id": stored["id"] }),
    );
    assert_eq!(read["accounts"][0]["name"], injected);

    for text in [
        "*",
        "name:x OR 1",
        "{\"match_all\":{}}",
        "\"unbalanced",
        "(",
        "a AND",
    ] {
        let found = graphql.data(SEARCH, json!({ "query": text }));
        assert!(found["products"].is_array(), "{text}: {found}");
    }
}
