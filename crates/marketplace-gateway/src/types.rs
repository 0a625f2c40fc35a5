//! The GraphQL object types and the `Time` scalar, converted from the
//! services' messages. Money stays an exact count of minor units until it
//! is written out as the API's `Float`.

use async_graphql::{
    ComplexObject, Context, InputValueError, InputValueResult, Scalar, ScalarType, SimpleObject,
    Value,
};
use chrono::{DateTime, SecondsFormat, Utc};
use marketplace_domain::Money;
use marketplace_proto::account::v1 as account;
use marketplace_proto::catalog::v1 as catalog;
use marketplace_proto::order::v1 as order;

use crate::error;
use crate::loaders::{AccountOrders, Loaders};
use crate::schema::take_or_default;

/// A point in time, written as an RFC 3339 string in UTC
/// (`2026-11-25T09:30:00.123456Z`), as the Go original's `Time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(pub DateTime<Utc>);

#[Scalar(name = "Time")]
impl ScalarType for Time {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => DateTime::parse_from_rfc3339(text)
                .map(|time| Self(time.with_timezone(&Utc)))
                .map_err(|_| InputValueError::custom("expected an RFC 3339 time")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

/// A customer's account.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Account {
    pub id: String,
    pub name: String,
    /// When the account was created.
    pub created_at: Time,
}

#[ComplexObject]
impl Account {
    /// The account's newest orders, newest first: `take` of them (default
    /// and most 100).
    #[graphql(complexity = "take_or_default(take) * child_complexity + 1")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        take: Option<i32>,
    ) -> async_graphql::Result<Vec<Order>> {
        let take = crate::schema::checked_take(take, "take")?;
        if take == 0 {
            return Ok(Vec::new());
        }
        let loaders = ctx.data::<Loaders>()?;
        let orders = loaders
            .orders
            .load_one(AccountOrders {
                account_id: self.id.clone(),
                take,
            })
            .await?;
        Ok(orders.unwrap_or_default())
    }
}

/// A product of the catalog.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub description: String,
    #[graphql(skip)]
    pub price: Money,
    /// When the product was created.
    pub created_at: Time,
}

#[ComplexObject]
impl Product {
    /// The current price.
    async fn price(&self) -> f64 {
        self.price.to_f64()
    }
}

/// An order, priced when it was placed.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Order {
    pub id: String,
    /// The account that placed the order.
    pub account_id: String,
    pub created_at: Time,
    #[graphql(skip)]
    pub total_price: Money,
    #[graphql(skip)]
    pub lines: Vec<OrderLine>,
}

/// A line of an order as stored: the product, how many, and the price it
/// was sold at.
#[derive(Debug, Clone)]
pub struct OrderLine {
    pub product_id: String,
    pub quantity: u32,
    pub unit_price: Money,
}

#[ComplexObject]
impl Order {
    /// The exact sum of quantity times price over the products.
    async fn total_price(&self) -> f64 {
        self.total_price.to_f64()
    }

    /// The ordered products, by product id, each with the price it was
    /// sold at. Names and descriptions are the catalog's.
    #[graphql(complexity = "crate::schema::MAX_LINES_COST * child_complexity + 1")]
    async fn products(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<OrderedProduct>> {
        let loaders = ctx.data::<Loaders>()?;
        let products = loaders
            .products
            .load_many(self.lines.iter().map(|line| line.product_id.clone()))
            .await?;
        self.lines
            .iter()
            .map(|line| match products.get(&line.product_id) {
                Some(product) => Ok(OrderedProduct {
                    id: line.product_id.clone(),
                    name: product.name.clone(),
                    description: product.description.clone(),
                    price: line.unit_price.to_f64(),
                    quantity: i32::try_from(line.quantity).unwrap_or(i32::MAX),
                }),
                None => {
                    tracing::error!(order = %self.id, product = %line.product_id, "an ordered product is missing from the catalog");
                    Err(error::ErrorCode::NotFound.error(format!(
                        "product {} of order {} is no longer in the catalog",
                        line.product_id, self.id
                    )))
                }
            })
            .collect()
    }
}

/// A product as ordered: the catalog's name and description with the
/// order's quantity and the price it was sold at.
#[derive(Debug, Clone, SimpleObject)]
pub struct OrderedProduct {
    pub id: String,
    pub name: String,
    pub description: String,
    /// The unit price when the order was placed.
    pub price: f64,
    pub quantity: i32,
}

fn time(
    field: &str,
    timestamp: Option<prost_types::Timestamp>,
) -> Result<Time, async_graphql::Error> {
    let timestamp = timestamp.ok_or_else(|| malformed(&format!("{field} is missing")))?;
    let nanos = u32::try_from(timestamp.nanos).map_err(|_| malformed(field))?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
        .map(Time)
        .ok_or_else(|| malformed(field))
}

fn money(
    field: &str,
    money: Option<marketplace_proto::common::v1::Money>,
) -> Result<Money, async_graphql::Error> {
    let minor_units = money
        .ok_or_else(|| malformed(&format!("{field} is missing")))?
        .minor_units;
    Money::from_minor_units(minor_units).map_err(|_| malformed(field))
}

/// A service answered with something the gateway cannot read: a defect,
/// logged, and INTERNAL to the client.
fn malformed(what: &str) -> async_graphql::Error {
    tracing::error!(what, "a service sent a malformed answer");
    error::internal()
}

impl TryFrom<account::Account> for Account {
    type Error = async_graphql::Error;

    fn try_from(account: account::Account) -> Result<Self, Self::Error> {
        Ok(Self {
            created_at: time("account.created_at", account.created_at)?,
            id: account.id,
            name: account.name,
        })
    }
}

impl TryFrom<catalog::Product> for Product {
    type Error = async_graphql::Error;

    fn try_from(product: catalog::Product) -> Result<Self, Self::Error> {
        Ok(Self {
            price: money("product.price", product.price)?,
            created_at: time("product.created_at", product.created_at)?,
            id: product.id,
            name: product.name,
            description: product.description,
        })
    }
}

impl TryFrom<order::Order> for Order {
    type Error = async_graphql::Error;

    fn try_from(order: order::Order) -> Result<Self, Self::Error> {
        let lines = order
            .lines
            .into_iter()
            .map(|line| {
                Ok(OrderLine {
                    unit_price: money("order line unit_price", line.unit_price)?,
                    product_id: line.product_id,
                    quantity: line.quantity,
                })
            })
            .collect::<Result<_, async_graphql::Error>>()?;
        Ok(Self {
            created_at: time("order.created_at", order.created_at)?,
            total_price: money("order.total_price", order.total_price)?,
            id: order.id,
            account_id: order.account_id,
            lines,
        })
    }
}
