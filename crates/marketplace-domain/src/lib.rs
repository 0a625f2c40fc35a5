//! Domain types shared by the marketplace's services. Each is a newtype with
//! private fields and one parsing constructor, so a value that exists is
//! valid ("parse, don't validate"). Nothing here knows about storage or
//! transport.

mod id;
mod money;
mod page;
mod text;

pub use crate::id::{Id, IdError};
pub use crate::money::{Money, MoneyError};
pub use crate::page::Page;
pub use crate::text::{Text, TextError, TextRule};
