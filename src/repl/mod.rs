//! Log shipping between a primary and its replicas: the receiver's reassembly of shipped
//! bytes, the primary's shipper and the replica's link (`docs/design.md`, "Log shipping").

mod receiver;

pub use receiver::Receiver;
