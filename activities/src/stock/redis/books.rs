//! What the reaper and the operator read and settle: expired lines, the
//! settle pass, every reservation line, the books per SKU.

use super::{RedisStock, SkuKeys, SETTLE_BATCH};
use crate::stock::{
    Expired, LineState, ReservationLine, Settled, SkuLevel, StockError, StockSnapshot,
};
use ::redis::AsyncCommands;
use serde_json::Value;

impl RedisStock {
    /// Reservation lines past their deadline and still held, at most
    /// `limit` per SKU, oldest first. Nothing changes.
    pub async fn expired(&self, now_ms: u64, limit: usize) -> Result<Expired, StockError> {
        let mut lines = Vec::new();
        let mut conn = self.conn.clone();
        for sku in self.skus().await? {
            let SkuKeys([_, _, deadlines]) = self.keys(&sku);
            let ids: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
                .arg(&deadlines)
                .arg("-inf")
                .arg(format!("({now_ms}"))
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.plumbing(e))?;
            lines.extend(ids.into_iter().map(|id| (sku.clone(), id)));
        }
        Ok(Expired { lines })
    }

    /// Settles expired lines SKU by SKU: a live saga's line gets the
    /// deadline `keep_until_ms`, any other goes back to available (see
    /// `settle.lua`).
    pub async fn settle(
        &self,
        expired: &Expired,
        lives: &(dyn Fn(&str) -> bool + Sync),
        now_ms: u64,
        keep_until_ms: u64,
    ) -> Result<Settled, StockError> {
        let (now, keep_until) = (now_ms.to_string(), keep_until_ms.to_string());
        let mut settled = Settled::default();
        let mut rest = expired.lines.as_slice();
        while let Some((sku, _)) = rest.first() {
            let same = rest.iter().take_while(|(s, _)| s == sku).count();
            let (these, after) = rest.split_at(same.min(SETTLE_BATCH));
            rest = after;
            let mut args: Vec<&str> = Vec::with_capacity(2 + 2 * these.len());
            args.extend([now.as_str(), keep_until.as_str()]);
            for (_, id) in these {
                args.extend([id.as_str(), if lives(id) { "1" } else { "0" }]);
            }
            let (reclaimed, kept): (usize, usize) = self
                .run(&self.scripts.settle, sku, &args)
                .await
                .map_err(|e| self.plumbing(e))?;
            settled.reclaimed += reclaimed;
            settled.kept += kept;
        }
        Ok(settled)
    }

    async fn skus(&self) -> Result<Vec<String>, StockError> {
        let mut conn = self.conn.clone();
        let mut skus: Vec<String> = conn
            .smembers(self.skus_key())
            .await
            .map_err(|e| self.plumbing(e))?;
        skus.sort();
        Ok(skus)
    }

    /// Every line of every reservation (see [`super::Stock::reservations`]),
    /// read SKU by SKU with `HSCAN`, so a large ledger does not block the
    /// server. Tombstones (`L` lines that never held units) are left out.
    pub async fn reservations(&self) -> Result<Vec<ReservationLine>, StockError> {
        let mut conn = self.conn.clone();
        let mut lines = Vec::new();
        for sku in self.skus().await? {
            let SkuKeys([_, resv, _]) = self.keys(&sku);
            let mut cursor = 0u64;
            loop {
                let (next, page): (u64, Vec<(String, String)>) = ::redis::cmd("HSCAN")
                    .arg(&resv)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.plumbing(e))?;
                for (reservation, record) in page {
                    // Written by the scripts: {"s": state, "q": units, ...}.
                    let record: Value = serde_json::from_str(&record).unwrap_or(Value::Null);
                    let units = record["q"].as_u64().unwrap_or(0) as u32;
                    let state = match record["s"].as_str().unwrap_or("") {
                        "R" => LineState::Reserved,
                        "C" => LineState::Committed,
                        "X" => LineState::Expired,
                        "T" => LineState::Returned,
                        _ => LineState::Released,
                    };
                    if units > 0 {
                        lines.push(ReservationLine {
                            reservation,
                            sku: sku.clone(),
                            units,
                            state,
                        });
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(lines)
    }

    /// Totals over every seeded SKU, for invariant checks. Each SKU's counts
    /// are read atomically; the totals are not one instant across SKUs.
    pub async fn snapshot(&self) -> Result<StockSnapshot, StockError> {
        let mut snapshot = StockSnapshot::default();
        for sku in self.skus().await? {
            let ([initial, available, reserved, sold], committed) = self.counts(&sku).await?;
            snapshot.initial += initial;
            snapshot.available += available;
            snapshot.reserved += reserved;
            snapshot.sold += sold;
            snapshot.committed_reservations += committed;
            if available + reserved + sold != initial || available < 0 || reserved < 0 || sold < 0 {
                snapshot.inconsistent = true;
            }
        }
        Ok(snapshot)
    }

    /// Each SKU's counts (see [`super::Stock::levels`]).
    pub async fn levels(&self) -> Result<Vec<SkuLevel>, StockError> {
        let mut levels = Vec::new();
        for sku in self.skus().await? {
            let ([initial, available, reserved, sold], _) = self.counts(&sku).await?;
            levels.push(SkuLevel {
                sku,
                initial,
                available,
                reserved,
                sold,
            });
        }
        Ok(levels)
    }

    /// One SKU's initial, available, reserved and sold units, and its
    /// committed reservations (a missing field counts 0).
    async fn counts(&self, sku: &str) -> Result<([i64; 4], i64), StockError> {
        let SkuKeys([stock, _, _]) = self.keys(sku);
        let counts: Vec<Option<i64>> = ::redis::cmd("HMGET")
            .arg(&stock)
            .arg(&["initial", "available", "reserved", "sold", "committed"])
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.plumbing(e))?;
        let [initial, available, reserved, sold, committed] =
            <[Option<i64>; 5]>::try_from(counts).unwrap_or_default();
        let n = |v: Option<i64>| v.unwrap_or(0);
        Ok((
            [n(initial), n(available), n(reserved), n(sold)],
            n(committed),
        ))
    }
}
