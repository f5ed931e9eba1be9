//! The ring on a host: tokio connections around the core's sans-IO node.

pub mod balance;
pub mod conn;
#[cfg(feature = "discovery")]
pub mod discover;
pub mod driver;
pub mod head;
pub mod recover;
pub mod weights;
pub mod worker;
