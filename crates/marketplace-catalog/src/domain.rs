//! Products and the catalog's rules for reading them: how many ids one call
//! may ask for, how long a search may be and how deep a page may reach.

use chrono::{DateTime, SubsecRound, Utc};
use marketplace_domain::{Id, Money, Page, Text};

/// A product in the catalog.
///
/// Every field is already a validated domain type, so a `Product` that
/// exists is valid; the fields are public for the storage layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: Id,
    /// Validated with `TextRule::PRODUCT_NAME`.
    pub name: Text,
    /// Validated with `TextRule::PRODUCT_DESCRIPTION`.
    pub description: Text,
    pub price: Money,
    /// Whole microseconds, so every backend returns exactly what was stored.
    pub created_at: DateTime<Utc>,
}

impl Product {
    /// A new product with a fresh id, created now.
    pub fn create(name: Text, description: Text, price: Money) -> Self {
        Self {
            id: Id::generate(),
            name,
            description,
            price,
            created_at: now(),
        }
    }
}

/// The current time truncated to whole microseconds, the precision both
/// backends store.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The most ids one `GetProducts` call may ask for: an order's lines are
/// far fewer, and a bound keeps one call from fetching the whole catalog.
pub const MAX_IDS_PER_CALL: usize = 1000;

/// The deepest result a page may reach (`skip + take`). Elasticsearch
/// refuses to page past its `index.max_result_window` (10000 by default);
/// the embedded backend keeps the same limit so both behave alike.
pub const MAX_RESULT_WINDOW: u32 = 10_000;

/// The longest search text, in characters.
pub const MAX_SEARCH_CHARS: usize = 500;

/// A page of results that lies within the first [`MAX_RESULT_WINDOW`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResultWindow(Page);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "skip + take must not exceed {MAX_RESULT_WINDOW} (asked for results up to {end}); narrow the search instead of paging this deep"
)]
pub struct WindowTooDeep {
    end: u64,
}

impl ResultWindow {
    pub fn new(page: Page) -> Result<Self, WindowTooDeep> {
        let end = u64::from(page.skip()) + u64::from(page.take());
        if end > u64::from(MAX_RESULT_WINDOW) {
            Err(WindowTooDeep { end })
        } else {
            Ok(Self(page))
        }
    }

    pub fn skip(self) -> u32 {
        self.0.skip()
    }

    /// Never zero: `Page` replaces 0 with its default.
    pub fn take(self) -> u32 {
        self.0.take()
    }

    /// `skip + take`, at most [`MAX_RESULT_WINDOW`].
    pub fn end(self) -> u32 {
        self.skip() + self.take()
    }
}

/// Free text to search for, searched as words and never as query syntax.
/// It may be blank: a blank search lists products instead.
///
/// Control characters are refused, as in names and descriptions, except
/// line breaks and tabs: they are whitespace to both analysers, so a search
/// pasted from a description still works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchText(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchTextError {
    #[error("query is longer than {MAX_SEARCH_CHARS} characters")]
    TooLong,
    #[error("query contains a control character")]
    ControlCharacter,
}

impl SearchText {
    pub fn parse(text: &str) -> Result<Self, SearchTextError> {
        if text.chars().count() > MAX_SEARCH_CHARS {
            return Err(SearchTextError::TooLong);
        }
        let allowed = |c: char| matches!(c, '\n' | '\r' | '\t');
        if text.chars().any(|c| c.is_control() && !allowed(c)) {
            return Err(SearchTextError::ControlCharacter);
        }
        Ok(Self(text.to_owned()))
    }

    /// Whether there is nothing to search for.
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_may_reach_exactly_the_limit_but_not_beyond() {
        assert!(ResultWindow::new(Page::new(9_000, 1_000)).is_ok());
        assert!(ResultWindow::new(Page::new(9_999, 1)).is_ok());
        let error = ResultWindow::new(Page::new(9_500, 1_000)).unwrap_err();
        assert!(error.to_string().contains("10000"), "{error}");
        assert!(ResultWindow::new(Page::new(u32::MAX, 1_000)).is_err());
        assert_eq!(ResultWindow::default().end(), 100);
    }

    #[test]
    fn search_text_counts_characters_and_may_be_blank() {
        assert!(SearchText::parse(&"é".repeat(500)).is_ok());
        assert_eq!(
            SearchText::parse(&"a".repeat(501)),
            Err(SearchTextError::TooLong)
        );
        assert!(SearchText::parse(" \t ").unwrap().is_blank());
        assert!(!SearchText::parse("(").unwrap().is_blank());
    }

    #[test]
    fn search_text_refuses_control_characters_but_not_line_breaks_or_tabs() {
        for text in ["a\u{0}b", "\u{7}", "lamp\u{1b}[2J", "\u{85}"] {
            assert_eq!(
                SearchText::parse(text),
                Err(SearchTextError::ControlCharacter),
                "{text:?}"
            );
        }
        assert!(SearchText::parse("brass\nlamp\r\n\tshade").is_ok());
    }

    #[test]
    fn created_products_have_whole_microseconds() {
        let product = Product::create(
            Text::parse("Lamp", marketplace_domain::TextRule::PRODUCT_NAME).unwrap(),
            Text::parse("A lamp", marketplace_domain::TextRule::PRODUCT_DESCRIPTION).unwrap(),
            Money::ZERO,
        );
        assert_eq!(product.created_at.timestamp_subsec_nanos() % 1_000, 0);
    }
}
