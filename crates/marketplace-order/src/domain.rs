//! Orders and the rules for placing one: which requests are acceptable and
//! how a priced order's total is computed. Pure: no storage or transport.

use std::collections::{HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use marketplace_domain::{Id, Money};

/// Most lines one order may have.
pub const MAX_LINES: usize = 100;

/// Most accounts one listing may ask about: with at most
/// [`TakePerAccount::MAX`] orders each, a reply stays well under the
/// transport's message size limit.
pub const MAX_ACCOUNTS_PER_LIST: usize = 100;

/// How many of each account's newest orders a listing returns: 1 to
/// [`TakePerAccount::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakePerAccount(u32);

impl TakePerAccount {
    /// What a request that does not say gets.
    pub const DEFAULT: u32 = 20;
    pub const MAX: u32 = 100;

    /// 0 (unset) means [`Self::DEFAULT`]; more than [`Self::MAX`] is capped.
    pub const fn new(requested: u32) -> Self {
        match requested {
            0 => Self(Self::DEFAULT),
            n if n > Self::MAX => Self(Self::MAX),
            n => Self(n),
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

/// How many of one product a line orders: 1 to [`Quantity::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 1000;

    pub fn new(quantity: u32) -> Result<Self, QuantityError> {
        if (1..=Self::MAX).contains(&quantity) {
            Ok(Self(quantity))
        } else {
            Err(QuantityError(quantity))
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a quantity must be between 1 and {max}, not {0}", max = Quantity::MAX)]
pub struct QuantityError(pub u32);

/// One line of a stored order: the product, how many, and the catalog's
/// price of one when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    pub product_id: Id,
    pub quantity: Quantity,
    pub unit_price: Money,
}

/// A placed order. Lines are ordered by product id, which is also how
/// storage returns them (the schema keeps no line position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: Id,
    pub account_id: Id,
    pub created_at: DateTime<Utc>,
    pub total_price: Money,
    pub lines: Vec<OrderLine>,
}

/// A line as the customer asks for it, before pricing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedLine {
    pub product_id: Id,
    pub quantity: Quantity,
}

/// An acceptable request for an order: at least one and at most
/// [`MAX_LINES`] lines, each product on one line only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    account_id: Id,
    lines: Vec<RequestedLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderRequestError {
    #[error("an order needs at least one line")]
    NoLines,
    #[error(
        "an order has at most {MAX_LINES} lines; this one has {0}, so split it into several orders"
    )]
    TooManyLines(usize),
    #[error("product {0} appears on more than one line; put its whole quantity on one line")]
    DuplicateProduct(Id),
}

impl OrderRequest {
    pub fn new(account_id: Id, lines: Vec<RequestedLine>) -> Result<Self, OrderRequestError> {
        if lines.is_empty() {
            return Err(OrderRequestError::NoLines);
        }
        if lines.len() > MAX_LINES {
            return Err(OrderRequestError::TooManyLines(lines.len()));
        }
        let mut seen = HashSet::with_capacity(lines.len());
        for line in &lines {
            if !seen.insert(&line.product_id) {
                return Err(OrderRequestError::DuplicateProduct(line.product_id.clone()));
            }
        }
        Ok(Self { account_id, lines })
    }

    pub fn account_id(&self) -> &Id {
        &self.account_id
    }

    pub fn lines(&self) -> &[RequestedLine] {
        &self.lines
    }

    /// Every product the order asks for, once each.
    pub fn product_ids(&self) -> Vec<Id> {
        self.lines.iter().map(|l| l.product_id.clone()).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// The catalog has no price for these products (they do not exist).
    #[error("{}", MissingProducts(.0))]
    UnknownProducts(Vec<Id>),
    #[error(
        "the order total would exceed the maximum amount of 100000000000.00; order fewer items"
    )]
    TotalTooLarge,
}

struct MissingProducts<'a>(&'a [Id]);

impl fmt::Display for MissingProducts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.0.iter().map(Id::as_str).collect();
        match ids.as_slice() {
            [one] => write!(f, "product {one} does not exist"),
            many => write!(f, "products {} do not exist", many.join(", ")),
        }
    }
}

/// Prices `request` with the catalog's `prices`: each line at the catalog's
/// unit price, the total the exact sum of quantity times unit price. Every
/// product missing from `prices` is named in the error.
pub fn price_order(
    id: Id,
    created_at: DateTime<Utc>,
    request: &OrderRequest,
    prices: &HashMap<Id, Money>,
) -> Result<Order, PricingError> {
    let missing: Vec<Id> = request
        .lines
        .iter()
        .filter(|line| !prices.contains_key(&line.product_id))
        .map(|line| line.product_id.clone())
        .collect();
    if !missing.is_empty() {
        return Err(PricingError::UnknownProducts(missing));
    }
    let mut lines: Vec<OrderLine> = request
        .lines
        .iter()
        .filter_map(|line| {
            prices.get(&line.product_id).map(|&unit_price| OrderLine {
                product_id: line.product_id.clone(),
                quantity: line.quantity,
                unit_price,
            })
        })
        .collect();
    lines.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    let total_price = lines
        .iter()
        .try_fold(Money::ZERO, |sum, line| {
            sum.plus(line.unit_price.times(line.quantity.get())?)
        })
        .map_err(|_| PricingError::TotalTooLarge)?;
    Ok(Order {
        id,
        account_id: request.account_id.clone(),
        created_at,
        total_price,
        lines,
    })
}

/// Now, to the microsecond: the precision both storage backends keep, so a
/// stored order reads back exactly as it was created.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn money(text: &str) -> Money {
        Money::parse_decimal(text).unwrap()
    }

    fn line(product_id: &Id, quantity: u32) -> RequestedLine {
        RequestedLine {
            product_id: product_id.clone(),
            quantity: Quantity::new(quantity).unwrap(),
        }
    }

    fn ids(n: usize) -> Vec<Id> {
        (0..n).map(|_| Id::generate()).collect()
    }

    #[test]
    fn the_acceptance_example_totals_exactly_1_60() {
        let products = ids(3);
        let request = OrderRequest::new(
            Id::generate(),
            vec![
                line(&products[0], 3),
                line(&products[1], 3),
                line(&products[2], 1),
            ],
        )
        .unwrap();
        let prices = HashMap::from([
            (products[0].clone(), money("0.10")),
            (products[1].clone(), money("0.20")),
            (products[2].clone(), money("0.70")),
        ]);

        let order = price_order(Id::generate(), now(), &request, &prices).unwrap();

        assert_eq!(order.total_price.minor_units(), 160);
        assert_eq!(order.lines.len(), 3);
        assert_eq!(order.account_id, *request.account_id());
    }

    #[test]
    fn each_line_keeps_the_catalog_unit_price() {
        let products = ids(2);
        let request = OrderRequest::new(
            Id::generate(),
            vec![line(&products[0], 2), line(&products[1], 5)],
        )
        .unwrap();
        let prices = HashMap::from([
            (products[0].clone(), money("19.99")),
            (products[1].clone(), money("0.01")),
        ]);

        let order = price_order(Id::generate(), now(), &request, &prices).unwrap();

        for line in &order.lines {
            assert_eq!(line.unit_price, prices[&line.product_id]);
        }
        assert_eq!(order.total_price, money("40.03"));
    }

    #[test]
    fn lines_are_ordered_by_product_id() {
        let mut products = ids(5);
        products.reverse();
        let lines = products.iter().map(|p| line(p, 1)).collect();
        let request = OrderRequest::new(Id::generate(), lines).unwrap();
        let prices = products.iter().map(|p| (p.clone(), money("1"))).collect();

        let order = price_order(Id::generate(), now(), &request, &prices).unwrap();

        let ordered: Vec<&Id> = order.lines.iter().map(|l| &l.product_id).collect();
        let mut sorted = ordered.clone();
        sorted.sort();
        assert_eq!(ordered, sorted);
    }

    #[test]
    fn every_product_without_a_price_is_named() {
        let products = ids(3);
        let request = OrderRequest::new(
            Id::generate(),
            products.iter().map(|p| line(p, 1)).collect(),
        )
        .unwrap();
        let prices = HashMap::from([(products[1].clone(), money("1"))]);

        let error = price_order(Id::generate(), now(), &request, &prices).unwrap_err();

        assert_eq!(
            error,
            PricingError::UnknownProducts(vec![products[0].clone(), products[2].clone()])
        );
        let message = error.to_string();
        assert!(message.contains(products[0].as_str()) && message.contains(products[2].as_str()));
        assert!(!message.contains(products[1].as_str()));
    }

    #[test]
    fn an_overflowing_total_is_refused() {
        let products = ids(2);
        let request = OrderRequest::new(
            Id::generate(),
            vec![line(&products[0], 1000), line(&products[1], 1)],
        )
        .unwrap();
        let huge = money("100000000000");
        let prices = HashMap::from([(products[0].clone(), huge), (products[1].clone(), huge)]);

        let error = price_order(Id::generate(), now(), &request, &prices).unwrap_err();

        assert_eq!(error, PricingError::TotalTooLarge);
        assert!(error.to_string().contains("100000000000.00"), "{error}");
    }

    #[test]
    fn requests_need_between_one_and_a_hundred_distinct_lines() {
        assert_eq!(
            OrderRequest::new(Id::generate(), vec![]),
            Err(OrderRequestError::NoLines)
        );
        let many: Vec<RequestedLine> = ids(101).iter().map(|p| line(p, 1)).collect();
        assert_eq!(
            OrderRequest::new(Id::generate(), many.clone()),
            Err(OrderRequestError::TooManyLines(101))
        );
        assert!(OrderRequest::new(Id::generate(), many[..100].to_vec()).is_ok());
        let product = Id::generate();
        assert_eq!(
            OrderRequest::new(Id::generate(), vec![line(&product, 1), line(&product, 2)]),
            Err(OrderRequestError::DuplicateProduct(product))
        );
    }

    #[test]
    fn quantities_are_between_one_and_a_thousand() {
        assert!(Quantity::new(0).is_err());
        assert_eq!(Quantity::new(1).unwrap().get(), 1);
        assert_eq!(Quantity::new(1000).unwrap().get(), 1000);
        assert_eq!(
            Quantity::new(1001).unwrap_err().to_string(),
            "a quantity must be between 1 and 1000, not 1001"
        );
    }

    #[test]
    fn take_per_account_defaults_to_20_and_is_capped_at_100() {
        assert_eq!(TakePerAccount::new(0).get(), 20);
        assert_eq!(TakePerAccount::new(1).get(), 1);
        assert_eq!(TakePerAccount::new(100).get(), 100);
        assert_eq!(TakePerAccount::new(101).get(), 100);
        assert_eq!(TakePerAccount::new(u32::MAX).get(), 100);
    }

    #[test]
    fn now_is_whole_microseconds() {
        assert_eq!(now().timestamp_subsec_nanos() % 1000, 0);
    }
}
