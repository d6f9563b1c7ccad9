//! Log shipping between a primary and its replicas (`docs/design.md`, "Log shipping"): the
//! primary's [`shipper`], the replica's [`link`] and its [`Receiver`], the frames over a socket
//! and what each side reports about the other.

pub mod auth;
mod error;
pub mod link;
mod receiver;
pub mod shipper;
pub mod status;
mod wire;

pub use error::ReplError;
pub use receiver::Receiver;
pub use status::{LinkState, LinkStatus, ReplicaPeer};
