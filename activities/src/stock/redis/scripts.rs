//! The Lua scripts of the Redis stock ledger, each prefixed with the shared
//! prelude, loaded once at connect (EVALSHA after; the driver reloads one
//! after a SCRIPT FLUSH).

use ::redis::Script;

/// Shared by every script: read and write a line record of `KEYS[2]`.
const PRELUDE: &str = include_str!("prelude.lua");

/// KEYS: stock, resv, deadlines. ARGV: id, qty, deadline_ms, claim token
/// ("" for single-line orders), primary ("1" on the order's first SKU: that
/// line stands for the reservation in counts). Returns `taken`, the existing state (`R`,
/// `C`, `L`, `X`), `out_of_stock` or `unknown_sku`.
const RESERVE: &str = include_str!("reserve.lua");

/// Undoes what one attempt of a multi-line reserve took. ARGV: id, token.
/// Returns 1 when units went back.
const UNRESERVE: &str = include_str!("unreserve.lua");

/// ARGV: id. Returns `released`, `nothing` (tombstone written) or
/// `committed` (nothing changed).
const RELEASE: &str = include_str!("release.lua");

/// ARGV: id, claim token ("" for single-line). Returns `committed`,
/// `retaken` (expired line sold from available), `C` (already),
/// `sold_out`, `L`, `T` or `unknown`.
const COMMIT: &str = include_str!("commit.lua");

/// Gives back a line one commit attempt re-took. ARGV: id, token.
const UNCOMMIT: &str = include_str!("uncommit.lua");

/// Returns a sold line to stock (a refund). ARGV: id. Returns `returned`,
/// `T` (already), `unknown` or the state of a line never sold.
const RETURN: &str = include_str!("return.lua");

/// ARGV: now_ms, keep_until_ms, then (id, lives) pairs. Keeps the lines of
/// live sagas with the new deadline and expires the others. Returns
/// {reservations reclaimed, reservations kept}.
const SETTLE: &str = include_str!("settle.lua");

/// ARGV: units. Replaces the SKU's stock and forgets its reservations.
const SEED: &str = include_str!("seed.lua");

/// Every script, ready to invoke.
pub(super) struct Scripts {
    pub(super) reserve: Script,
    pub(super) unreserve: Script,
    pub(super) release: Script,
    pub(super) commit: Script,
    pub(super) uncommit: Script,
    pub(super) give_back: Script,
    pub(super) settle: Script,
    pub(super) seed: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let s = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            reserve: s(RESERVE),
            unreserve: s(UNRESERVE),
            release: s(RELEASE),
            commit: s(COMMIT),
            uncommit: s(UNCOMMIT),
            give_back: s(RETURN),
            settle: s(SETTLE),
            seed: s(SEED),
        }
    }

    pub(super) fn all(&self) -> [&Script; 8] {
        [
            &self.reserve,
            &self.unreserve,
            &self.release,
            &self.commit,
            &self.uncommit,
            &self.give_back,
            &self.settle,
            &self.seed,
        ]
    }
}
