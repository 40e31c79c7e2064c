//! Payments: the HTTP adapter ([`http`]) for a Stripe-shaped provider:
//! Stripe itself, or the payment sandbox (`sagaflow-payment-sandbox`) the
//! worker starts in the embedded profile or that runs standalone.

pub mod http;
