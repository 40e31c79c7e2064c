//! The embedded stock ledger: one SQLite file in the data directory, with
//! the semantics the module above describes (the Redis adapter keeps the
//! same books).

use super::{
    aggregate_lines, not_sold, unknown_to_return, Expired, LineState, ReservationLine, Settled,
    SkuLevel, StockError, StockSnapshot,
};
use crate::clock::now_ms;
use crate::group_commit::GroupCommit;
use crate::order::OrderLine;
use crate::sqlite::open_store;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use sagaflow_workflows::ActivityError;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Mutex;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT PRIMARY KEY,
    initial INTEGER NOT NULL,
    available INTEGER NOT NULL CHECK (available >= 0),
    reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    sold INTEGER NOT NULL DEFAULT 0 CHECK (sold >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    items TEXT NOT NULL,
    state TEXT NOT NULL,
    deadline_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_deadline ON reservations (deadline_ms) WHERE state = 'reserved';
";

/// The embedded stock ledger. Cheap to share behind an `Arc`.
///
/// The saga's calls (reserve, release, commit, return) are written by a
/// thread of the ledger's, many to a transaction ([`GroupCommit`]); reads,
/// seeding and the reaper use a connection of their own.
pub struct StockLedger {
    conn: Mutex<Connection>,
    writes: GroupCommit,
}

fn db_err(e: rusqlite::Error) -> ActivityError {
    ActivityError::retryable("stock_db", format!("stock ledger: {e}"))
}

impl StockLedger {
    /// Opens (creating if needed) the ledger file.
    pub fn open(path: &Path) -> Result<StockLedger, StockError> {
        let conn = open_store(path, SCHEMA)?;
        let writes = GroupCommit::start(open_store(path, SCHEMA)?, "sagaflow-stock", "stock_db")
            .map_err(|e| StockError::Thread(e.to_string()))?;
        Ok(StockLedger {
            conn: Mutex::new(conn),
            writes,
        })
    }

    /// Sets the stock of each SKU (initial = available), replacing what was
    /// there. For seeding demos and tests.
    pub fn seed(&self, stock: &[(String, i64)]) -> Result<(), StockError> {
        let mut conn = self.conn.lock().expect("stock ledger lock");
        let tx = conn.transaction()?;
        for (sku, units) in stock {
            tx.execute(
                "INSERT INTO stock (sku, initial, available) VALUES (?1, ?2, ?2)
                 ON CONFLICT (sku) DO UPDATE SET initial = ?2, available = ?2, reserved = 0, sold = 0",
                params![sku, units],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Reserves every line of an order under `reservation` until
    /// `deadline_ms`. Idempotent: a second call returns the same reservation.
    pub async fn reserve(
        &self,
        reservation: &str,
        items: &[OrderLine],
        deadline_ms: u64,
    ) -> Result<Value, ActivityError> {
        let (reservation, items) = (reservation.to_owned(), items.to_vec());
        self.writes
            .run(move |tx| Self::reserve_in(tx, &reservation, &items, deadline_ms))
            .await
    }

    /// Returns a reservation's stock. Idempotent; an unknown reservation is
    /// recorded as released so a late reserve cannot take stock.
    pub async fn release(&self, reservation: &str) -> Result<Value, ActivityError> {
        let reservation = reservation.to_owned();
        self.writes
            .run(move |tx| Self::release_in(tx, &reservation))
            .await
    }

    /// Turns a reservation into a sale. Idempotent. An expired reservation
    /// re-takes its stock if it is still available.
    pub async fn commit(&self, reservation: &str) -> Result<Value, ActivityError> {
        let reservation = reservation.to_owned();
        self.writes
            .run(move |tx| Self::commit_in(tx, &reservation))
            .await
    }

    /// Returns a sold reservation's units to stock (a refund): `sold` goes
    /// down and `available` up by its lines, once; the reservation ends
    /// `returned`. A repeat succeeds and changes nothing. A reservation that
    /// was never sold is the business error `not_sold`; an unknown one,
    /// `unknown_reservation`.
    pub async fn return_sold(&self, reservation: &str) -> Result<Value, ActivityError> {
        let reservation = reservation.to_owned();
        self.writes
            .run(move |tx| Self::return_sold_in(tx, &reservation))
            .await
    }

    /// [`Self::reserve`] inside the batch's transaction.
    fn reserve_in(
        tx: &Connection,
        reservation: &str,
        items: &[OrderLine],
        deadline_ms: u64,
    ) -> Result<Value, ActivityError> {
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM reservations WHERE id = ?1",
                [reservation],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        match state.as_deref() {
            Some("reserved") | Some("committed") => {
                return Ok(
                    json!({"kind": "reservation", "reservation": reservation, "state": state}),
                )
            }
            Some(other) => {
                return Err(ActivityError::business(
                    "reservation_closed",
                    format!(
                        "reservation {reservation} is already {other}; it cannot be reserved again"
                    ),
                ))
            }
            None => {}
        }
        for line in items {
            let changed = tx
                .prepare_cached(
                    "UPDATE stock SET available = available - ?2, reserved = reserved + ?2
                     WHERE sku = ?1 AND available >= ?2",
                )
                .and_then(|mut s| s.execute(params![line.sku, line.qty]))
                .map_err(db_err)?;
            if changed == 0 {
                let known: bool = tx
                    .query_row("SELECT 1 FROM stock WHERE sku = ?1", [&line.sku], |_| {
                        Ok(true)
                    })
                    .optional()
                    .map_err(db_err)?
                    .unwrap_or(false);
                // Dropping `tx` rolls back the lines already taken.
                return Err(if known {
                    ActivityError::business(
                        "out_of_stock",
                        format!("not enough stock of {} for {} unit(s)", line.sku, line.qty),
                    )
                } else {
                    ActivityError::business("unknown_sku", format!("no such sku {}", line.sku))
                });
            }
        }
        let items_json = serde_json::to_string(items).expect("order lines serialize");
        tx.prepare_cached(
            "INSERT INTO reservations (id, items, state, deadline_ms, updated_ms) VALUES (?1, ?2, 'reserved', ?3, ?4)",
        )
        .and_then(|mut s| s.execute(params![reservation, items_json, deadline_ms as i64, now_ms() as i64]))
        .map_err(db_err)?;
        Ok(json!({"kind": "reservation", "reservation": reservation, "state": "reserved"}))
    }

    /// [`Self::release`] inside the batch's transaction.
    fn release_in(tx: &Connection, reservation: &str) -> Result<Value, ActivityError> {
        let row = reservation_row(tx, reservation)?;
        let state = match row {
            None => {
                tx.execute(
                    "INSERT INTO reservations (id, items, state, deadline_ms, updated_ms) VALUES (?1, '[]', 'released', 0, ?2)",
                    params![reservation, now_ms() as i64],
                )
                .map_err(db_err)?;
                "nothing_to_release"
            }
            Some((state, _)) if state == "released" || state == "expired" => "released",
            // Sold, or sold and returned by a refund.
            Some((state, _)) if state == "committed" || state == "returned" => {
                return Err(ActivityError::business(
                    "already_committed",
                    format!("reservation {reservation} is committed (sold); it cannot be released"),
                ))
            }
            Some((_, items)) => {
                move_units(
                    tx,
                    &items,
                    "available = available + ?2, reserved = reserved - ?2",
                )
                .and_then(|()| set_state(tx, reservation, "released"))
                .map_err(db_err)?;
                "released"
            }
        };
        Ok(json!({"kind": "release", "reservation": reservation, "state": state}))
    }

    /// [`Self::commit`] inside the batch's transaction.
    fn commit_in(tx: &Connection, reservation: &str) -> Result<Value, ActivityError> {
        match reservation_row(tx, reservation)? {
            None => {
                return Err(ActivityError::business(
                    "unknown_reservation",
                    format!("no reservation {reservation} to commit"),
                ))
            }
            Some((state, _)) if state == "committed" => {}
            Some((state, items)) if state == "reserved" => {
                move_units(tx, &items, "reserved = reserved - ?2, sold = sold + ?2")
                    .and_then(|()| set_state(tx, reservation, "committed"))
                    .map_err(db_err)?;
            }
            Some((state, items)) if state == "expired" => {
                for line in &items {
                    let changed = tx
                        .execute(
                            "UPDATE stock SET available = available - ?2, sold = sold + ?2 WHERE sku = ?1 AND available >= ?2",
                            params![line.sku, line.qty],
                        )
                        .map_err(db_err)?;
                    if changed == 0 {
                        return Err(ActivityError::business(
                            "reservation_expired",
                            format!(
                                "reservation {reservation} expired and {} is sold out; raise [stock] reservation_ttl or restock, then retry",
                                line.sku
                            ),
                        ));
                    }
                }
                set_state(tx, reservation, "committed").map_err(db_err)?;
            }
            Some((state, _)) => {
                return Err(ActivityError::business(
                    "reservation_closed",
                    format!("reservation {reservation} is {state}; it cannot be committed"),
                ))
            }
        }
        Ok(json!({"kind": "commit", "reservation": reservation, "state": "committed"}))
    }

    /// [`Self::return_sold`] inside the batch's transaction.
    fn return_sold_in(tx: &Connection, reservation: &str) -> Result<Value, ActivityError> {
        match reservation_row(tx, reservation)? {
            None => return Err(unknown_to_return(reservation)),
            Some((state, _)) if state == "returned" => {}
            Some((state, items)) if state == "committed" => {
                move_units(tx, &items, "sold = sold - ?2, available = available + ?2")
                    .and_then(|()| set_state(tx, reservation, "returned"))
                    .map_err(db_err)?;
            }
            Some((state, _)) => return Err(not_sold(reservation, &state)),
        }
        Ok(json!({"kind": "return", "reservation": reservation, "state": "returned"}))
    }

    /// Reservations still held whose deadline is before `now_ms`, at most
    /// `limit`, oldest deadline first. Nothing changes: the reaper asks the
    /// engine about their sagas first, then calls [`StockLedger::settle`].
    pub fn expired(&self, now_ms: u64, limit: usize) -> Result<Expired, StockError> {
        let conn = self.conn.lock().expect("stock ledger lock");
        let ids: Vec<String> = conn
            .prepare_cached(
                "SELECT id FROM reservations WHERE state = 'reserved' AND deadline_ms < ?1 ORDER BY deadline_ms LIMIT ?2",
            )?
            .query_map(params![now_ms as i64, limit as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(Expired {
            lines: ids.into_iter().map(|id| (String::new(), id)).collect(),
        })
    }

    /// Reclaims the expired reservations whose saga has ended or is unknown
    /// and moves the deadline of the others (their saga still lives) to
    /// `keep_until_ms`. A reservation that changed since [`StockLedger::expired`]
    /// saw it (committed, released, renewed) is left alone.
    pub fn settle(
        &self,
        expired: &Expired,
        lives: &dyn Fn(&str) -> bool,
        now_ms: u64,
        keep_until_ms: u64,
    ) -> Result<Settled, StockError> {
        let mut conn = self.conn.lock().expect("stock ledger lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut settled = Settled::default();
        for (_, id) in &expired.lines {
            if lives(id) {
                settled.kept += tx
                    .prepare_cached(
                        "UPDATE reservations SET deadline_ms = ?3 WHERE id = ?1 AND state = 'reserved' AND deadline_ms < ?2",
                    )?
                    .execute(params![id, now_ms as i64, keep_until_ms as i64])?;
                continue;
            }
            let items: Option<String> = tx
                .prepare_cached(
                    "SELECT items FROM reservations WHERE id = ?1 AND state = 'reserved' AND deadline_ms < ?2",
                )?
                .query_row(params![id, now_ms as i64], |r| r.get(0))
                .optional()?;
            if let Some(items) = items {
                let items: Vec<OrderLine> = serde_json::from_str(&items).unwrap_or_default();
                move_units(
                    &tx,
                    &items,
                    "available = available + ?2, reserved = reserved - ?2",
                )?;
                set_state(&tx, id, "expired")?;
                settled.reclaimed += 1;
            }
        }
        tx.commit()?;
        Ok(settled)
    }

    /// Totals for invariant checks.
    pub fn snapshot(&self) -> Result<StockSnapshot, StockError> {
        let conn = self.conn.lock().expect("stock ledger lock");
        snapshot(&conn)
    }

    /// Each SKU's counts (see [`super::Stock::levels`]).
    pub fn levels(&self) -> Result<Vec<SkuLevel>, StockError> {
        let conn = self.conn.lock().expect("stock ledger lock");
        let mut statement =
            conn.prepare("SELECT sku, initial, available, reserved, sold FROM stock ORDER BY sku")?;
        let rows = statement.query_map([], |r| {
            Ok(SkuLevel {
                sku: r.get(0)?,
                initial: r.get(1)?,
                available: r.get(2)?,
                reserved: r.get(3)?,
                sold: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every line of every reservation (see [`super::Stock::reservations`]).
    pub fn reservations(&self) -> Result<Vec<ReservationLine>, StockError> {
        let conn = self.conn.lock().expect("stock ledger lock");
        let mut statement = conn.prepare("SELECT id, items, state FROM reservations")?;
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut lines = Vec::new();
        for row in rows {
            let (reservation, items, state) = row?;
            let state = match state.as_str() {
                "reserved" => LineState::Reserved,
                "committed" => LineState::Committed,
                "released" => LineState::Released,
                "expired" => LineState::Expired,
                _ => LineState::Returned,
            };
            // Written by this module from `OrderLine`s; a tombstone's is `[]`.
            let items: Vec<OrderLine> = serde_json::from_str(&items).unwrap_or_default();
            for (sku, units) in aggregate_lines(&items) {
                lines.push(ReservationLine {
                    reservation: reservation.clone(),
                    sku,
                    units,
                    state,
                });
            }
        }
        Ok(lines)
    }

    /// Reads the totals from a ledger file without holding it open.
    pub fn read_snapshot(path: &Path) -> Result<StockSnapshot, StockError> {
        snapshot(&open_store(path, SCHEMA)?)
    }
}

fn snapshot(conn: &Connection) -> Result<StockSnapshot, StockError> {
    let mut s = conn.query_row(
        "SELECT COALESCE(SUM(initial),0), COALESCE(SUM(available),0), COALESCE(SUM(reserved),0), COALESCE(SUM(sold),0),
                COALESCE(SUM(available + reserved + sold != initial OR available < 0 OR reserved < 0 OR sold < 0), 0)
         FROM stock",
        [],
        |r| {
            Ok(StockSnapshot {
                initial: r.get(0)?,
                available: r.get(1)?,
                reserved: r.get(2)?,
                sold: r.get(3)?,
                committed_reservations: 0,
                inconsistent: r.get::<_, i64>(4)? > 0,
            })
        },
    )?;
    s.committed_reservations = conn.query_row(
        "SELECT COUNT(*) FROM reservations WHERE state = 'committed'",
        [],
        |r| r.get(0),
    )?;
    Ok(s)
}

fn reservation_row(
    tx: &Connection,
    reservation: &str,
) -> Result<Option<(String, Vec<OrderLine>)>, ActivityError> {
    let row: Option<(String, String)> = tx
        .prepare_cached("SELECT state, items FROM reservations WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([reservation], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(db_err)?;
    Ok(row.map(|(state, items)| (state, serde_json::from_str(&items).unwrap_or_default())))
}

fn move_units(tx: &Connection, items: &[OrderLine], set: &str) -> rusqlite::Result<()> {
    let sql = format!("UPDATE stock SET {set} WHERE sku = ?1");
    let mut stmt = tx.prepare_cached(&sql)?;
    for line in items {
        stmt.execute(params![line.sku, line.qty])?;
    }
    Ok(())
}

fn set_state(tx: &Connection, reservation: &str, state: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE reservations SET state = ?2, updated_ms = ?3 WHERE id = ?1")?
        .execute(params![reservation, state, now_ms() as i64])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(name: &str) -> StockLedger {
        let dir =
            std::env::temp_dir().join(format!("sagaflow-stock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let l = StockLedger::open(&dir.join("stock.db")).unwrap();
        l.seed(&[("A".into(), 2)]).unwrap();
        l
    }

    fn one(sku: &str) -> Vec<OrderLine> {
        vec![OrderLine {
            sku: sku.into(),
            qty: 1,
        }]
    }

    #[tokio::test]
    async fn reserve_is_idempotent_and_stops_at_zero() {
        let l = ledger("idem");
        l.reserve("s1", &one("A"), u64::MAX / 2).await.unwrap();
        l.reserve("s1", &one("A"), u64::MAX / 2).await.unwrap();
        l.reserve("s2", &one("A"), u64::MAX / 2).await.unwrap();
        let e = l.reserve("s3", &one("A"), u64::MAX / 2).await.unwrap_err();
        assert_eq!(e.kind, "out_of_stock");
        assert!(!e.retryable);
        let s = l.snapshot().unwrap();
        assert_eq!((s.available, s.reserved, s.sold), (0, 2, 0));
        assert_eq!(
            l.reserve("s4", &one("B"), 1).await.unwrap_err().kind,
            "unknown_sku"
        );
    }

    #[tokio::test]
    async fn commit_and_release_are_idempotent() {
        let l = ledger("commit");
        l.reserve("s1", &one("A"), u64::MAX / 2).await.unwrap();
        l.reserve("s2", &one("A"), u64::MAX / 2).await.unwrap();
        l.commit("s1").await.unwrap();
        l.commit("s1").await.unwrap();
        l.release("s2").await.unwrap();
        l.release("s2").await.unwrap();
        let s = l.snapshot().unwrap();
        assert_eq!(
            (s.available, s.reserved, s.sold, s.committed_reservations),
            (1, 0, 1, 1)
        );
        assert!(!s.inconsistent);
        assert_eq!(l.release("s1").await.unwrap_err().kind, "already_committed");
    }

    #[tokio::test]
    async fn release_before_reserve_blocks_the_late_reserve() {
        let l = ledger("tomb");
        l.release("s1").await.unwrap();
        assert_eq!(
            l.reserve("s1", &one("A"), u64::MAX / 2)
                .await
                .unwrap_err()
                .kind,
            "reservation_closed"
        );
        assert_eq!(l.snapshot().unwrap().available, 2);
    }

    #[tokio::test]
    async fn expired_reservations_are_reclaimed() {
        let l = ledger("expire");
        l.reserve("s1", &one("A"), 1_000).await.unwrap();
        l.reserve("s2", &one("A"), u64::MAX / 2).await.unwrap();
        let expired = l.expired(2_000, 100).unwrap();
        assert_eq!(expired.sagas(), ["s1"]);
        let settled = l.settle(&expired, &|_| false, 2_000, 0).unwrap();
        assert_eq!(settled.reclaimed, 1);
        let s = l.snapshot().unwrap();
        assert_eq!((s.available, s.reserved), (1, 1));
        // A late commit re-takes the stock while some is left...
        l.commit("s1").await.unwrap();
        let s = l.snapshot().unwrap();
        assert_eq!((s.available, s.reserved, s.sold), (0, 1, 1));
        assert!(!s.inconsistent);
    }
}
