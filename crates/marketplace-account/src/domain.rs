//! What an account is. No storage or transport here.

use chrono::{DateTime, SubsecRound, Utc};
use marketplace_domain::{Id, Text};

/// A customer account.
///
/// The fields are public because each is already a validated type; a new
/// account comes from [`Account::new`], a stored one from the storage layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: Id,
    pub name: Text,
    /// Whole microseconds, so that every store returns exactly this value.
    pub created_at: DateTime<Utc>,
}

impl Account {
    /// An account created now, with a fresh id.
    pub fn new(name: Text) -> Self {
        Self {
            id: Id::generate(),
            name,
            created_at: now(),
        }
    }
}

/// The current time truncated to whole microseconds: the precision of
/// PostgreSQL's `timestamptz` and of the SQLite column.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    use marketplace_domain::TextRule;

    use super::*;

    #[test]
    fn a_new_account_is_stamped_in_whole_microseconds() {
        let name = Text::parse("Ada", TextRule::ACCOUNT_NAME).unwrap_or_else(|e| panic!("{e}"));

        let account = Account::new(name);

        assert_eq!(account.created_at.timestamp_subsec_nanos() % 1000, 0);
        assert_eq!(account.name.as_str(), "Ada");
    }
}
