//! Offset pagination as the GraphQL API speaks it (`skip`, `take`), with a
//! default and a cap so no request can ask for everything at once.

/// A page of a list: `take` items after the first `skip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    skip: u32,
    take: u32,
}

impl Page {
    /// The page size when none is asked for.
    pub const DEFAULT_TAKE: u32 = 100;
    /// The largest page served; a larger `take` is capped to it.
    pub const MAX_TAKE: u32 = 1000;

    /// `take` 0 means the default; a `take` above the maximum is capped.
    pub fn new(skip: u32, take: u32) -> Self {
        let take = match take {
            0 => Self::DEFAULT_TAKE,
            t => t.min(Self::MAX_TAKE),
        };
        Self { skip, take }
    }

    pub fn skip(self) -> u32 {
        self.skip
    }

    pub fn take(self) -> u32 {
        self.take
    }
}

impl Default for Page {
    fn default() -> Self {
        Self::new(0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_defaults_and_is_capped() {
        assert_eq!(Page::new(0, 0).take(), 100);
        assert_eq!(Page::new(5, 7), Page { skip: 5, take: 7 });
        assert_eq!(Page::new(0, 1_000_000).take(), 1000);
        assert_eq!(Page::default(), Page::new(0, 100));
    }
}
