//! User-supplied text: names and descriptions. Stored verbatim (no trimming,
//! no escaping: storage layers bind parameters), but never blank, never
//! longer than its field allows, never with control characters.

/// What one text field accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRule {
    /// The field's name in error messages.
    pub field: &'static str,
    /// The most characters (not bytes) the field holds.
    pub max_chars: usize,
    /// Whether line breaks and tabs are allowed (descriptions, not names).
    pub multiline: bool,
}

impl TextRule {
    pub const ACCOUNT_NAME: Self = Self {
        field: "name",
        max_chars: 200,
        multiline: false,
    };
    pub const PRODUCT_NAME: Self = Self {
        field: "name",
        max_chars: 200,
        multiline: false,
    };
    pub const PRODUCT_DESCRIPTION: Self = Self {
        field: "description",
        max_chars: 5000,
        multiline: true,
    };
}

/// Text that satisfied its field's rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Text(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{field} must not be empty or only whitespace")]
    Blank { field: &'static str },
    #[error("{field} is longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("{field} contains a control character")]
    ControlCharacter { field: &'static str },
}

impl Text {
    pub fn parse(value: &str, rule: TextRule) -> Result<Self, TextError> {
        let field = rule.field;
        if value.trim().is_empty() {
            return Err(TextError::Blank { field });
        }
        if value.chars().count() > rule.max_chars {
            return Err(TextError::TooLong {
                field,
                max: rule.max_chars,
            });
        }
        let allowed = |c: char| rule.multiline && matches!(c, '\n' | '\r' | '\t');
        if value.chars().any(|c| c.is_control() && !allowed(c)) {
            return Err(TextError::ControlCharacter { field });
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_kept_verbatim() {
        for value in ["'; DROP TABLE accounts; --", " Ada ", "Zoë \u{1F680}", "a"] {
            assert_eq!(
                Text::parse(value, TextRule::ACCOUNT_NAME).unwrap().as_str(),
                value
            );
        }
    }

    #[test]
    fn blank_text_is_refused() {
        for value in ["", " ", "\u{3000}", " \u{a0} "] {
            assert_eq!(
                Text::parse(value, TextRule::ACCOUNT_NAME),
                Err(TextError::Blank { field: "name" }),
                "{value:?}"
            );
        }
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        let at_limit = "é".repeat(200);
        let over = "a".repeat(201);
        assert!(Text::parse(&at_limit, TextRule::ACCOUNT_NAME).is_ok());
        assert_eq!(
            Text::parse(&over, TextRule::ACCOUNT_NAME),
            Err(TextError::TooLong {
                field: "name",
                max: 200
            })
        );
    }

    #[test]
    fn control_characters_are_refused_but_descriptions_may_break_lines() {
        assert!(Text::parse("a\u{0}b", TextRule::PRODUCT_DESCRIPTION).is_err());
        assert!(Text::parse("a\nb", TextRule::ACCOUNT_NAME).is_err());
        assert!(Text::parse("line one\nline two\tend", TextRule::PRODUCT_DESCRIPTION).is_ok());
    }
}
