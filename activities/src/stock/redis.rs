//! The Redis stock adapter: the same ledger as [`super::StockLedger`], kept
//! in Redis by Lua scripts so flash-sale traffic on a few hot SKUs stays
//! atomic without a lock.
//!
//! Not responsible for: choosing the backend (the worker does, from
//! `[profile] stock`), nor for running the reaper (the worker calls
//! [`RedisStock::expired`] and [`RedisStock::settle`] every second, asking
//! the engine in between which sagas still live).
//!
//! # Keys
//!
//! Every key of a SKU carries the SKU as its hash tag, so all of them live in
//! one hash slot and one script can touch them atomically on Redis Cluster:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}stock:{SKU}` | hash | `initial`, `available`, `reserved`, `sold`, `committed` (reservations committed whose first line is this SKU) |
//! | `{prefix}resv:{SKU}` | hash | reservation id -> JSON record of its line for this SKU: state `s` (`R` reserved, `C` committed, `L` released or tombstone, `X` expired, `T` returned after a sale), units `q`, `p` on the order's first line (which stands for the reservation in counts), claims (below) |
//! | `{prefix}deadlines:{SKU}` | sorted set | live (`R`) reservation ids scored by deadline (ms) |
//! | `{prefix}skus` | set | every seeded SKU |
//!
//! The `skus` set hashes to its own slot: it is read only by the operator
//! snapshot and the reaper, which visit SKUs one at a time, never inside a
//! script with the other keys.
//!
//! # Why line by line
//!
//! A reservation (one per saga) covers every line of an order, and an
//! order's SKUs sit in different slots; a script cannot span slots. So a
//! reservation is one record per (reservation id, SKU), each changed
//! atomically by a script in its SKU's slot, and a multi-line reserve runs
//! the lines in turn and undoes the ones it took when a later line is
//! refused (out of stock; a Redis error undoes nothing and stays
//! retryable). A reserve that finds every line already held returns at
//! once, writing nothing: a re-run after the commit finds it committed.
//! The undo must be safe when two attempts of the same call overlap (an
//! attempt that timed out may still be running when its retry starts): each
//! attempt of a multi-line call records a claim token on every line it took
//! or found held, and an undo only removes its own claim; a line goes back
//! only when no claim is left. A line held by an attempt that succeeded
//! keeps that claim forever, so it is never undone behind a success.
//! Single-line orders, the flash-sale case, are one script call and write
//! no claims.
//!
//! # Invariants (the same as the embedded ledger's)
//!
//! - per SKU, `available + reserved + sold = initial`, all >= 0, at every
//!   instant (each script changes them together);
//! - a line moves `R -> C | L | X` once, and `C -> T` once (a refund
//!   returns the units: `sold` down, `available` up); a repeat is a no-op
//!   that succeeds;
//! - units come back only through a script (release, reclaim, undo), never
//!   through a key TTL: a TTL would drop the record and lose the units;
//! - releasing an unknown reservation writes an `L` tombstone on each line,
//!   so a reserve that arrives after its own compensation cannot take stock;
//! - a late commit of an `X` line re-takes the units if they are available,
//!   else fails as the business error `reservation_expired`; a commit
//!   re-takes expired lines before it commits live ones, and gives back what
//!   it re-took when one is sold out, so a failed commit sells nothing
//!   (except in the race where the reaper expires a line between the two
//!   passes: then the live lines already committed stay sold and the saga,
//!   past its pivot, parks for an operator retry; no unit is sold twice).
//!
//! Known limit: records are kept forever (like the embedded table); Redis
//! 7.0 has no per-field expiry, so pruning old `C`/`L`/`X` records is an
//! operator job for now.

mod books;
mod config;
mod lines;
mod scripts;

use super::{aggregate_lines, StockError};
use crate::order::OrderLine;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncCommands, Client, RedisError, Script};
use config::mask_password;
pub use config::RedisStockConfig;
use lines::{already_committed, claim_token, closed, state_name};
use sagaflow_workflows::ActivityError;
use scripts::Scripts;
use serde_json::{json, Value};
use std::time::Duration;

/// How many expired ids one settle script call handles, so a backlog does
/// not block the server for long.
const SETTLE_BATCH: usize = 500;

/// The Redis stock ledger. Cheap to share behind an `Arc`; every call clones
/// the multiplexed connection, so calls run concurrently.
pub struct RedisStock {
    conn: ConnectionManager,
    prefix: String,
    /// The URL with any password masked, for messages.
    shown_url: String,
    scripts: Scripts,
}

/// How long [`RedisStock::connect_with`] waits for a server that answers
/// LOADING (reading its data back after a restart).
const LOADING_WAIT: Duration = Duration::from_secs(60);

fn is_loading(e: &RedisError) -> bool {
    e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::BusyLoading)
}

/// The three keys of one SKU, in the order every script expects.
struct SkuKeys([String; 3]);

/// `{p}stock:{SKU}`, `{p}resv:{SKU}`, `{p}deadlines:{SKU}`: the braces make
/// the SKU the hash tag, so the three share a Cluster slot.
fn sku_keys(p: &str, sku: &str) -> SkuKeys {
    SkuKeys([
        format!("{p}stock:{{{sku}}}"),
        format!("{p}resv:{{{sku}}}"),
        format!("{p}deadlines:{{{sku}}}"),
    ])
}

impl RedisStock {
    /// Whether the server answers a PING now (the worker's `/readyz`).
    pub async fn ping(&self) -> Result<(), StockError> {
        let mut conn = self.conn.clone();
        ::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| StockError::Redis {
                url: self.shown_url.clone(),
                reason: e.to_string(),
            })
    }

    /// What `redis-benchmark` needs to run the reserve script exactly as
    /// [`RedisStock::reserve`] does for a one-line order: the script's SHA1
    /// (loaded at connect) and the keys of `sku`, in the script's order.
    /// ARGV is then: reservation id, qty, deadline ms, "" (no claim token),
    /// "1" (primary line).
    pub fn reserve_script_for(&self, sku: &str) -> (String, [String; 3]) {
        (
            self.scripts.reserve.get_hash().to_owned(),
            sku_keys(&self.prefix, sku).0,
        )
    }

    /// Connects with the default key prefix; fails at once, with what to do,
    /// when the server does not answer.
    pub async fn connect(url: &str) -> Result<RedisStock, StockError> {
        RedisStock::connect_with(RedisStockConfig::new(url)).await
    }

    /// Connects, checks the server answers and loads the scripts, so a bad
    /// URL or a stopped server shows at start-up rather than at the first
    /// order.
    pub async fn connect_with(config: RedisStockConfig) -> Result<RedisStock, StockError> {
        let shown_url = mask_password(&config.url);
        let unreachable = |e: RedisError| StockError::RedisUnreachable {
            url: shown_url.clone(),
            reason: e.to_string(),
        };
        let client = Client::open(config.url.as_str()).map_err(|e| StockError::RedisUrl {
            url: shown_url.clone(),
            reason: e.to_string(),
        })?;
        // Few, short reconnect attempts: a reserve waiting on a dead server
        // should fail as retryable and leave the backoff to the saga's retry
        // policy rather than sit in the driver.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let mut conn = ConnectionManager::new_with_config(client, manager_config)
            .await
            .map_err(unreachable)?;
        // A server that has just restarted answers LOADING while it reads
        // its append-only file back: that is Redis coming up, not Redis
        // missing, so a worker (re)started then waits for it.
        let loading_since = std::time::Instant::now();
        loop {
            match ::redis::cmd("PING").query_async::<String>(&mut conn).await {
                Ok(_) => break,
                Err(e) if is_loading(&e) && loading_since.elapsed() < LOADING_WAIT => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(unreachable(e)),
            }
        }
        let scripts = Scripts::new();
        for script in scripts.all() {
            script
                .prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(unreachable)?;
        }
        Ok(RedisStock {
            conn,
            prefix: config.key_prefix,
            shown_url,
            scripts,
        })
    }

    fn keys(&self, sku: &str) -> SkuKeys {
        sku_keys(&self.prefix, sku)
    }

    fn skus_key(&self) -> String {
        format!("{}skus", self.prefix)
    }

    fn unavailable(&self, e: RedisError) -> ActivityError {
        let kind = if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
        {
            "redis_unavailable"
        } else {
            // LOADING, BUSY, TRYAGAIN, CLUSTERDOWN...: the server is there
            // but cannot answer now; retrying is still right.
            "redis_error"
        };
        ActivityError::retryable(
            kind,
            format!(
                "stock in Redis at {}: {e}; the step will be retried",
                self.shown_url
            ),
        )
    }

    fn plumbing(&self, e: RedisError) -> StockError {
        StockError::Redis {
            url: self.shown_url.clone(),
            reason: e.to_string(),
        }
    }

    async fn run<T: ::redis::FromRedisValue>(
        &self,
        script: &Script,
        sku: &str,
        args: &[&str],
    ) -> Result<T, RedisError> {
        let SkuKeys(keys) = self.keys(sku);
        let mut invocation = script.prepare_invoke();
        for k in &keys {
            invocation.key(k);
        }
        for a in args {
            invocation.arg(*a);
        }
        let mut conn = self.conn.clone();
        invocation.invoke_async(&mut conn).await
    }

    /// Sets the stock of each SKU (initial = available) and forgets its
    /// reservations. For seeding demos and tests.
    pub async fn seed(&self, stock: &[(String, i64)]) -> Result<(), StockError> {
        let mut conn = self.conn.clone();
        for (sku, units) in stock {
            let _: i64 = self
                .run(&self.scripts.seed, sku, &[&units.to_string()])
                .await
                .map_err(|e| self.plumbing(e))?;
            let _: i64 = conn
                .sadd(self.skus_key(), sku)
                .await
                .map_err(|e| self.plumbing(e))?;
        }
        Ok(())
    }

    /// Reserves every line of an order under `reservation` until
    /// `deadline_ms`, all or nothing. Idempotent: a retry, or a re-run
    /// after a crash (even after the capture and the commit), finds the
    /// reservation held and returns it without touching it.
    ///
    /// Never undoes what may be another attempt's: a Redis error leaves
    /// every line held and fails retryably (the next attempt finds them
    /// held; if the saga ends instead, its compensation, the reaper or
    /// `reconcile` returns them), and a business failure gives back only
    /// the lines this attempt's own claim holds alone.
    pub async fn reserve(
        &self,
        reservation: &str,
        items: &[OrderLine],
        deadline_ms: u64,
    ) -> Result<Value, ActivityError> {
        let lines = aggregate_lines(items);
        if lines.len() > 1 {
            if let Some(held) = self.held_whole(reservation, &lines).await? {
                return Ok(held);
            }
        }
        let token = claim_token(&lines);
        let deadline = deadline_ms.to_string();
        let mut first_state = None;
        for (i, (sku, qty)) in lines.iter().enumerate() {
            let primary = if i == 0 { "1" } else { "0" };
            let outcome = self
                .run::<String>(
                    &self.scripts.reserve,
                    sku,
                    &[reservation, &qty.to_string(), &deadline, &token, primary],
                )
                .await;
            let failure = match outcome {
                // What this attempt took stays held: undoing it could
                // release lines a concurrent attempt has just reported
                // held, and a retry finds them.
                Err(e) => return Err(self.unavailable(e)),
                Ok(state) => match state.as_str() {
                    "taken" | "R" => {
                        first_state.get_or_insert("reserved");
                        None
                    }
                    "C" => {
                        first_state.get_or_insert("committed");
                        None
                    }
                    "out_of_stock" => Some(ActivityError::business(
                        "out_of_stock",
                        format!("not enough stock of {sku} for {qty} unit(s)"),
                    )),
                    "unknown_sku" => Some(ActivityError::business(
                        "unknown_sku",
                        format!("no such sku {sku}"),
                    )),
                    other => Some(ActivityError::business(
                        "reservation_closed",
                        format!(
                            "reservation {reservation} is already {}; it cannot be reserved again",
                            state_name(other)
                        ),
                    )),
                },
            };
            match failure {
                None => {}
                Some(error) => {
                    // A business failure gives back this attempt's own
                    // claims: a line goes back only when no other attempt
                    // claims it too (a concurrent one may be about to
                    // report it held). Lines an interrupted attempt left
                    // keep its claim: the saga has ended, so the reaper
                    // returns them at their deadline. If the undo fails,
                    // the reaper returns them too: nothing leaks for good.
                    if !token.is_empty() {
                        for (sku, _) in &lines {
                            if let Err(e) = self
                                .run::<i64>(&self.scripts.unreserve, sku, &[reservation, &token])
                                .await
                            {
                                tracing::warn!(reservation, sku, error = %e, "undoing a partial reservation failed; the reaper will return it at its deadline");
                            }
                        }
                    }
                    return Err(error);
                }
            }
        }
        Ok(json!({
            "kind": "reservation",
            "reservation": reservation,
            "state": first_state.unwrap_or("reserved"),
        }))
    }

    /// Returns a reservation's stock once. `items` are the order's lines
    /// (they name the SKUs the records live under). An unknown reservation
    /// leaves a tombstone; a committed one is the business error
    /// `already_committed` and changes nothing.
    pub async fn release(
        &self,
        reservation: &str,
        items: &[OrderLine],
    ) -> Result<Value, ActivityError> {
        let lines = aggregate_lines(items);
        // Look first so a release of a (partly) committed reservation
        // changes nothing, as the embedded ledger's one transaction does.
        for (sku, _) in &lines {
            if matches!(
                self.line_state(reservation, sku).await?.as_deref(),
                Some("C" | "T")
            ) {
                return Err(already_committed(reservation));
            }
        }
        let mut released_any = false;
        for (sku, _) in &lines {
            let outcome: String = self
                .run(&self.scripts.release, sku, &[reservation])
                .await
                .map_err(|e| self.unavailable(e))?;
            match outcome.as_str() {
                "committed" => return Err(already_committed(reservation)),
                "released" => released_any = true,
                _ => {}
            }
        }
        let state = if released_any {
            "released"
        } else {
            "nothing_to_release"
        };
        Ok(json!({"kind": "release", "reservation": reservation, "state": state}))
    }

    /// Turns a reservation into a sale once. `items` are the order's lines.
    /// An expired reservation re-takes its stock if it is still available,
    /// else fails as the business error `reservation_expired`.
    pub async fn commit(
        &self,
        reservation: &str,
        items: &[OrderLine],
    ) -> Result<Value, ActivityError> {
        let lines = aggregate_lines(items);
        let token = claim_token(&lines);
        let mut states = Vec::with_capacity(lines.len());
        for (sku, _) in &lines {
            states.push(self.line_state(reservation, sku).await?);
        }
        if states.iter().all(Option::is_none) {
            return Err(ActivityError::business(
                "unknown_reservation",
                format!("no reservation {reservation} to commit"),
            ));
        }
        if let Some(state) = states
            .iter()
            .flatten()
            .find(|s| s.as_str() == "L" || s.as_str() == "T")
        {
            return Err(closed(reservation, state, "committed"));
        }
        // Expired lines first: they are the ones that can fail for want of
        // stock, and failing before touching live lines leaves them live.
        let mut order: Vec<usize> = (0..lines.len()).collect();
        order.sort_by_key(|&i| states[i].as_deref() != Some("X"));
        let mut retaken: Vec<usize> = Vec::new();
        for i in order {
            let (sku, _) = &lines[i];
            let outcome = self
                .run::<String>(&self.scripts.commit, sku, &[reservation, &token])
                .await;
            let failure = match outcome {
                Err(e) => Some(self.unavailable(e)),
                Ok(s) => match s.as_str() {
                    "committed" | "C" => None,
                    "retaken" => {
                        retaken.push(i);
                        None
                    }
                    "sold_out" => Some(ActivityError::business(
                        "reservation_expired",
                        format!(
                            "reservation {reservation} expired and {sku} is sold out; raise [stock] reservation_ttl or restock, then retry"
                        ),
                    )),
                    "unknown" => Some(ActivityError::business(
                        "unknown_reservation",
                        format!("reservation {reservation} has no line for {sku} to commit"),
                    )),
                    other => Some(closed(reservation, other, "committed")),
                },
            };
            if let Some(error) = failure {
                if !token.is_empty() {
                    for j in retaken {
                        let (sku, _) = &lines[j];
                        if let Err(e) = self
                            .run::<i64>(&self.scripts.uncommit, sku, &[reservation, &token])
                            .await
                        {
                            tracing::warn!(reservation, sku, error = %e, "giving back a re-taken line failed; it stays sold until the commit is retried");
                        }
                    }
                }
                return Err(error);
            }
        }
        Ok(json!({"kind": "commit", "reservation": reservation, "state": "committed"}))
    }

    /// Returns a sold reservation's units to stock once (a refund). Every
    /// line must be sold (or returned already) before any is touched, so a
    /// return that cannot apply changes nothing; each line's script is
    /// idempotent, so a return cut short completes when repeated.
    pub async fn return_sold(
        &self,
        reservation: &str,
        items: &[OrderLine],
    ) -> Result<Value, ActivityError> {
        let lines = aggregate_lines(items);
        let mut states = Vec::with_capacity(lines.len());
        for (sku, _) in &lines {
            states.push(self.line_state(reservation, sku).await?);
        }
        if states.iter().all(Option::is_none) {
            return Err(super::unknown_to_return(reservation));
        }
        if let Some(state) = states
            .iter()
            .map(|s| s.as_deref().unwrap_or("unknown"))
            .find(|s| *s != "C" && *s != "T")
        {
            return Err(super::not_sold(reservation, state_name(state)));
        }
        for (sku, _) in &lines {
            let outcome: String = self
                .run(&self.scripts.give_back, sku, &[reservation])
                .await
                .map_err(|e| self.unavailable(e))?;
            if outcome != "returned" && outcome != "T" {
                return Err(super::not_sold(reservation, state_name(&outcome)));
            }
        }
        Ok(json!({"kind": "return", "reservation": reservation, "state": "returned"}))
    }

    /// The reservation as a reserve returns it when every line of it is
    /// already held (reserved or committed), read without writing; `None`
    /// when a line is missing or closed.
    async fn held_whole(
        &self,
        reservation: &str,
        lines: &[(String, u32)],
    ) -> Result<Option<Value>, ActivityError> {
        let mut first = None;
        for (sku, _) in lines {
            match self.line_state(reservation, sku).await?.as_deref() {
                Some("R") => first.get_or_insert("reserved"),
                Some("C") => first.get_or_insert("committed"),
                _ => return Ok(None),
            };
        }
        Ok(first.map(
            |state| json!({"kind": "reservation", "reservation": reservation, "state": state}),
        ))
    }

    async fn line_state(
        &self,
        reservation: &str,
        sku: &str,
    ) -> Result<Option<String>, ActivityError> {
        let SkuKeys([_, resv, _]) = self.keys(sku);
        let mut conn = self.conn.clone();
        let record: Option<String> = conn
            .hget(resv, reservation)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(record.and_then(|r| {
            serde_json::from_str::<Value>(&r)
                .ok()
                .and_then(|v| v["s"].as_str().map(str::to_owned))
        }))
    }
}

#[cfg(test)]
mod tests;
