//! RESP: request framing (what clients send) and reply encoding (what they read back).

pub mod reply;
pub mod request;

pub use reply::{Protocol, Reply};
pub use request::{Parsed, ProtocolError, RequestLimits, RequestParser};
