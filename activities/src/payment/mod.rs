//! Payments: the HTTP adapter ([`http`]) and the sandbox provider it talks to
//! in the embedded profile ([`sandbox`]).

pub mod http;
pub mod sandbox;
