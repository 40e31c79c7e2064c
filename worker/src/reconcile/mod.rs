//! `sagaflow reconcile`: do the books agree with the outside world?
//!
//! The engine says how each saga ended; the stock store, the payment
//! provider and the order store say what actually happened to the units,
//! the money and the order document. Reconcile reads all four
//! ([`books`]), decides where they disagree ([`drift`], pure), and with
//! `--fix` makes only the repairs that cannot hurt ([`repair`]): voiding
//! a hold no saga will capture and releasing a reservation no saga will
//! commit. Everything else (money kept for an order not sold, a completed
//! sale missing its capture) is reported with what an operator should do.

pub mod books;
pub mod drift;
pub mod repair;
