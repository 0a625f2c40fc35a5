//! Exact money: an integer count of minor units (cents) of the marketplace's
//! one currency. Binary floating point appears only at the edge, where the
//! GraphQL API speaks `Float`, and is converted exactly or refused.

use std::fmt;

/// Minor units per major unit: two decimal places.
const SCALE: i64 = 100;

/// The largest amount accepted, in minor units (10^13, i.e. 100 billion).
/// Far below 2^53, so every amount in range is exact as an `f64` too.
const MAX_MINOR_UNITS: i64 = 10_000_000_000_000;

/// A non-negative amount of money, exact to the minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must not be negative")]
    Negative,
    #[error("amount must be a finite number")]
    NotFinite,
    #[error("amount has more than two decimal places")]
    TooPrecise,
    #[error("amount is larger than the maximum of 100000000000.00")]
    TooLarge,
    #[error("amount is not a decimal number such as 19.99")]
    Malformed,
}

impl Money {
    pub const ZERO: Self = Self(0);

    pub fn from_minor_units(minor_units: i64) -> Result<Self, MoneyError> {
        if minor_units < 0 {
            Err(MoneyError::Negative)
        } else if minor_units > MAX_MINOR_UNITS {
            Err(MoneyError::TooLarge)
        } else {
            Ok(Self(minor_units))
        }
    }

    /// Converts a GraphQL `Float`. The binary value nearest to 0.1 is not
    /// 0.1, so the amount is the nearest whole number of minor units, and a
    /// value that is not within a rounding error of one (0.105) is refused
    /// rather than rounded.
    pub fn from_f64(amount: f64) -> Result<Self, MoneyError> {
        if !amount.is_finite() {
            return Err(MoneyError::NotFinite);
        }
        if amount < 0.0 {
            return Err(MoneyError::Negative);
        }
        let scaled = amount * SCALE as f64;
        if scaled > MAX_MINOR_UNITS as f64 {
            return Err(MoneyError::TooLarge);
        }
        let rounded = scaled.round();
        // `amount * 100` is off by at most a few units in the last place of
        // the result; anything further from a whole number of minor units
        // (0.105, 1e-9) really has a third decimal.
        let tolerance = (scaled * 8.0 * f64::EPSILON).max(1e-12);
        if (scaled - rounded).abs() > tolerance {
            return Err(MoneyError::TooPrecise);
        }
        #[allow(clippy::cast_possible_truncation)] // in range, checked above
        Self::from_minor_units(rounded as i64)
    }

    /// Parses a decimal string such as `19.99`, `7` or `0.5`.
    pub fn parse_decimal(text: &str) -> Result<Self, MoneyError> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if text.starts_with('-') {
            return Err(MoneyError::Negative);
        }
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || !(fraction.is_empty() || digits(fraction)) || text.ends_with('.') {
            return Err(MoneyError::Malformed);
        }
        if fraction.len() > 2 {
            return Err(MoneyError::TooPrecise);
        }
        let whole: i64 = whole.parse().map_err(|_| MoneyError::TooLarge)?;
        let cents: i64 = format!("{fraction:0<2}")
            .parse()
            .map_err(|_| MoneyError::Malformed)?;
        let minor = whole.checked_mul(SCALE).and_then(|w| w.checked_add(cents));
        Self::from_minor_units(minor.ok_or(MoneyError::TooLarge)?)
    }

    pub const fn minor_units(self) -> i64 {
        self.0
    }

    /// The amount as a GraphQL `Float`: exact for every amount in range,
    /// in the sense that converting it back gives the same `Money`.
    #[allow(clippy::cast_precision_loss)] // below 2^53, checked at construction
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / SCALE as f64
    }

    /// `self * quantity`, or `TooLarge`.
    pub fn times(self, quantity: u32) -> Result<Self, MoneyError> {
        let product = self
            .0
            .checked_mul(i64::from(quantity))
            .ok_or(MoneyError::TooLarge)?;
        Self::from_minor_units(product)
    }

    /// `self + other`, or `TooLarge`.
    pub fn plus(self, other: Self) -> Result<Self, MoneyError> {
        Self::from_minor_units(self.0.checked_add(other.0).ok_or(MoneyError::TooLarge)?)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / SCALE, self.0 % SCALE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(text: &str) -> Money {
        Money::parse_decimal(text).unwrap()
    }

    #[test]
    fn floats_that_mean_cents_convert_exactly() {
        assert_eq!(Money::from_f64(0.1).unwrap().minor_units(), 10);
        assert_eq!(Money::from_f64(0.2).unwrap().minor_units(), 20);
        assert_eq!(Money::from_f64(0.7).unwrap().minor_units(), 70);
        assert_eq!(Money::from_f64(19.99).unwrap().minor_units(), 1999);
        assert_eq!(Money::from_f64(0.0).unwrap(), Money::ZERO);
        assert_eq!(
            Money::from_f64(100_000_000_000.0).unwrap().minor_units(),
            MAX_MINOR_UNITS
        );
    }

    #[test]
    fn the_order_total_of_the_acceptance_example_is_exactly_1_60() {
        let lines = [(0.10, 3), (0.20, 3), (0.70, 1)];

        let total: Money = lines
            .iter()
            .try_fold(Money::ZERO, |sum, (price, quantity)| {
                sum.plus(Money::from_f64(*price)?.times(*quantity)?)
            })
            .unwrap();

        assert_eq!(total, money("1.60"));
        assert_eq!(total.to_f64(), 1.6);
        assert_eq!(total.to_string(), "1.60");
    }

    #[test]
    fn bad_floats_are_refused_not_rounded() {
        assert_eq!(Money::from_f64(-0.01), Err(MoneyError::Negative));
        assert_eq!(Money::from_f64(f64::NAN), Err(MoneyError::NotFinite));
        assert_eq!(Money::from_f64(f64::INFINITY), Err(MoneyError::NotFinite));
        assert_eq!(Money::from_f64(0.105), Err(MoneyError::TooPrecise));
        assert_eq!(Money::from_f64(1e-9), Err(MoneyError::TooPrecise));
        assert_eq!(
            Money::from_f64(100_000_000_000.01),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(Money::from_f64(1e300), Err(MoneyError::TooLarge));
    }

    #[test]
    fn every_amount_survives_the_float_wire_format() {
        for minor in [
            0,
            1,
            7,
            10,
            99,
            160,
            1999,
            123_456_789,
            MAX_MINOR_UNITS - 1,
            MAX_MINOR_UNITS,
        ] {
            let amount = Money::from_minor_units(minor).unwrap();
            assert_eq!(Money::from_f64(amount.to_f64()), Ok(amount), "{minor}");
        }
    }

    #[test]
    fn decimal_strings_parse_exactly() {
        assert_eq!(money("19.99").minor_units(), 1999);
        assert_eq!(money("7").minor_units(), 700);
        assert_eq!(money("0.5").minor_units(), 50);
        assert_eq!(money("0.05").minor_units(), 5);
        assert_eq!(Money::parse_decimal("1.999"), Err(MoneyError::TooPrecise));
        assert_eq!(Money::parse_decimal("-1"), Err(MoneyError::Negative));
        for bad in ["", ".5", "5.", "1,00", "1e3", "abc", " 1", "1.2.3", "+1"] {
            assert_eq!(
                Money::parse_decimal(bad),
                Err(MoneyError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            Money::parse_decimal("99999999999999999999"),
            Err(MoneyError::TooLarge)
        );
    }

    #[test]
    fn arithmetic_overflow_is_an_error() {
        let max = Money::from_minor_units(MAX_MINOR_UNITS).unwrap();
        assert_eq!(max.times(2), Err(MoneyError::TooLarge));
        assert_eq!(max.plus(money("0.01")), Err(MoneyError::TooLarge));
        assert_eq!(money("2.50").times(4), Ok(money("10")));
    }

    #[test]
    fn displays_with_two_decimals() {
        assert_eq!(money("0.05").to_string(), "0.05");
        assert_eq!(money("12").to_string(), "12.00");
    }
}
