//! Identifiers: KSUIDs, as in the Go original (27 base62 characters that
//! sort by creation time).

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use svix_ksuid::{Ksuid, KsuidLike};

const LENGTH: usize = 27;

/// The id of an account, product or order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid id (ids are 27-character KSUIDs)")]
pub struct IdError(String);

impl Id {
    /// A new id for something created now.
    pub fn generate() -> Self {
        Self::generate_at(SystemTime::now())
    }

    fn generate_at(time: SystemTime) -> Self {
        Self(Ksuid::new(Some(time), None).to_string())
    }

    pub fn parse(text: &str) -> Result<Self, IdError> {
        let shown = || IdError(text.chars().take(40).collect());
        if text.len() != LENGTH || !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(shown());
        }
        // Base62 of 20 bytes: a string of the right shape can still be out
        // of range, and the decoder drops the excess instead of failing.
        match Ksuid::from_str(text) {
            Ok(ksuid) if ksuid.to_string() == text => Ok(Self(text.to_owned())),
            _ => Err(shown()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_sort_by_creation() {
        let now = SystemTime::now();
        let first = Id::generate_at(now);
        let second = Id::generate_at(now + std::time::Duration::from_secs(1));

        assert_eq!(Id::parse(first.as_str()), Ok(first.clone()));
        assert_eq!(first.as_str().len(), 27);
        assert!(first < second);
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "abc",
            "0ujtsYcgvSTl8PAuAdqWYSMnLO",
            "0ujtsYcgvSTl8PAuAdqWYSMnLOvX",
            "0ujtsYcgvSTl8PAuAdqWYSMnLO!",
            "'; DROP TABLE x; --xxxxxxxx",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzz",
        ] {
            assert!(Id::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Id::parse("0ujtsYcgvSTl8PAuAdqWYSMnLOv").is_ok());
    }
}
