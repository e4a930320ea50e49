//! Retention: finished notifications leave the live table for the archive once they are older
//! than the inbox retention, and leave the archive once older than the archive retention.
//!
//! Every step is a small batch, so the job never holds the (single, on SQLite) writer for long
//! and intake keeps its turn. On PostgreSQL the archive is partitioned by month: purging drops
//! whole partitions, which costs no row deletes and no vacuum.

use sqlx::Row;

use super::notifications::{SELECT_COLUMNS, notification_from_row};
use super::states::FINISHED;
use super::{Backend, Durability, Error, Store};
use crate::model::{EpochMillis, Notification, NotificationId};

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

impl Store {
    /// Moves up to `limit` of the oldest finished notifications created before `cutoff` into
    /// the archive; returns how many moved.
    pub async fn archive_finished(&self, cutoff: EpochMillis, limit: usize) -> Result<u64, Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // SQLite gives a new row the largest rowid in the table plus one, so were the newest
        // row archived, the next notification would take its id (and its public id) again: the
        // newest row stays until a newer one exists. PostgreSQL's ids come from a sequence.
        let keep_newest = match self.backend {
            Backend::Sqlite => "AND id < (SELECT max(id) FROM notifications) ",
            Backend::Postgres => "",
        };
        let oldest = format!(
            "SELECT id FROM notifications WHERE state IN ({finished}) AND created_at < $1 \
             {keep_newest}ORDER BY created_at, id LIMIT $2",
            finished = FINISHED.codes()
        );
        match self.backend {
            Backend::Postgres => {
                self.create_partitions(cutoff, limit).await?;
                // One statement: the rows deleted are exactly the rows archived, whatever
                // other nodes do meanwhile (SKIP LOCKED lets two nodes' jobs share the work).
                let sql = format!(
                    "WITH moved AS (DELETE FROM notifications WHERE id IN ({oldest} FOR UPDATE SKIP LOCKED) \
                                    RETURNING {SELECT_COLUMNS}) \
                     INSERT INTO archived_notifications ({SELECT_COLUMNS}) \
                     SELECT {SELECT_COLUMNS} FROM moved ON CONFLICT DO NOTHING"
                );
                let mut conn = self.writer(Durability::Relaxed).await?;
                let result = sqlx::query(&sql)
                    .bind(cutoff)
                    .bind(limit)
                    .execute(&mut *conn)
                    .await?;
                Ok(result.rows_affected())
            }
            Backend::Sqlite => {
                // SQLite has one writer: nothing changes between the two statements.
                let mut conn = self.writer(Durability::Relaxed).await?;
                let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
                sqlx::query(&format!(
                    "INSERT OR IGNORE INTO archived_notifications ({SELECT_COLUMNS}) \
                     SELECT {SELECT_COLUMNS} FROM notifications WHERE id IN ({oldest})"
                ))
                .bind(cutoff)
                .bind(limit)
                .execute(&mut *tx)
                .await?;
                let moved =
                    sqlx::query(&format!("DELETE FROM notifications WHERE id IN ({oldest})"))
                        .bind(cutoff)
                        .bind(limit)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                tx.commit().await?;
                Ok(moved)
            }
        }
    }

    /// Deletes archived notifications created before `cutoff`; returns how many. SQLite: up to
    /// `limit` rows per call. PostgreSQL: every monthly partition that ends by `cutoff`, whole
    /// (rows of the cutoff's own month wait for their month to end).
    pub async fn purge_archive(&self, cutoff: EpochMillis, limit: usize) -> Result<u64, Error> {
        match self.backend {
            Backend::Sqlite => {
                let sql = "DELETE FROM archived_notifications WHERE id IN \
                           (SELECT id FROM archived_notifications WHERE created_at < $1 \
                            ORDER BY created_at LIMIT $2)";
                let result = sqlx::query(sql)
                    .bind(cutoff)
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .execute(&mut *self.writer(Durability::Relaxed).await?)
                    .await?;
                Ok(result.rows_affected())
            }
            Backend::Postgres => self.drop_partitions(cutoff).await,
        }
    }

    /// One recipient's archived notifications, newest first, with ids below `before`.
    pub async fn list_archived(
        &self,
        customer_id: &str,
        recipient: &str,
        before: Option<NotificationId>,
        limit: usize,
    ) -> Result<Vec<Notification>, Error> {
        let sql = format!(
            "SELECT {SELECT_COLUMNS} FROM archived_notifications \
             WHERE customer_id = $1 AND recipient = $2 AND id < $3 ORDER BY id DESC LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(customer_id)
            .bind(recipient)
            .bind(before.map_or(i64::MAX, |id| id.0))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(notification_from_row).collect()
    }

    /// Creates the monthly partitions the next batch (up to `limit` rows before `cutoff`) moves
    /// into, if missing.
    async fn create_partitions(&self, cutoff: EpochMillis, limit: i64) -> Result<(), Error> {
        let sql = format!(
            "SELECT MIN(created_at), MAX(created_at) FROM \
             (SELECT created_at FROM notifications WHERE state IN ({finished}) AND created_at < $1 \
              ORDER BY created_at, id LIMIT $2) oldest",
            finished = FINISHED.codes()
        );
        let row = sqlx::query(&sql)
            .bind(cutoff)
            .bind(limit)
            .fetch_one(&self.read)
            .await?;
        let (Some(first), Some(last)) = (
            row.try_get::<Option<i64>, _>(0)?,
            row.try_get::<Option<i64>, _>(1)?,
        ) else {
            return Ok(());
        };
        let mut month = Month::of(first);
        let mut conn = self.writer(Durability::Relaxed).await?;
        while month.start() <= last {
            let next = month.next();
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF archived_notifications \
                 FOR VALUES FROM ({}) TO ({})",
                month.partition(),
                month.start(),
                next.start()
            );
            sqlx::query(&sql).execute(&mut *conn).await?;
            month = next;
        }
        Ok(())
    }

    /// Drops every archive partition whose month ended by `cutoff`; returns the rows they held.
    async fn drop_partitions(&self, cutoff: EpochMillis) -> Result<u64, Error> {
        let rows = sqlx::query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'archived_notifications'::regclass",
        )
        .fetch_all(&self.read)
        .await?;
        let mut purged = 0;
        let mut conn = self.writer(Durability::Relaxed).await?;
        for row in rows {
            let name: String = row.try_get(0)?;
            let Some(month) = Month::from_partition(&name) else {
                continue;
            };
            if month.next().start() > cutoff {
                continue;
            }
            let count: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {name}"))
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?;
            sqlx::query(&format!("DROP TABLE {name}"))
                .execute(&mut *conn)
                .await?;
            tracing::info!(partition = %name, rows = count, "archive partition dropped");
            purged += u64::try_from(count).unwrap_or(0);
        }
        Ok(purged)
    }
}

/// A calendar month (UTC): what one archive partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Month {
    year: i64,
    /// 1 to 12.
    month: i64,
}

impl Month {
    /// The month `ms` falls in.
    fn of(ms: EpochMillis) -> Self {
        let (year, month) = civil_from_days(ms.div_euclid(DAY_MS));
        Self { year, month }
    }

    fn next(self) -> Self {
        match self.month {
            12 => Self {
                year: self.year + 1,
                month: 1,
            },
            m => Self {
                year: self.year,
                month: m + 1,
            },
        }
    }

    /// Its first millisecond.
    fn start(self) -> EpochMillis {
        days_from_civil(self.year, self.month) * DAY_MS
    }

    fn partition(self) -> String {
        format!("archived_notifications_y{:04}m{:02}", self.year, self.month)
    }

    fn from_partition(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("archived_notifications_y")?;
        let (year, month) = rest.split_once('m')?;
        let (year, month) = (year.parse().ok()?, month.parse().ok()?);
        (1..=12).contains(&month).then_some(Self { year, month })
    }
}

/// Days since 1970-01-01 of the first day of `month` in `year` (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year and month of a day counted from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_match_the_calendar() {
        // 2026-12-01T00:00:00Z and 2024-02-29T12:00:00Z.
        assert_eq!(
            Month::of(1_796_083_200_000),
            Month {
                year: 2026,
                month: 12
            }
        );
        assert_eq!(
            Month::of(1_796_083_199_999),
            Month {
                year: 2026,
                month: 11
            }
        );
        assert_eq!(
            Month::of(1_709_208_000_000),
            Month {
                year: 2024,
                month: 2
            }
        );
        assert_eq!(
            Month {
                year: 2026,
                month: 12
            }
            .start(),
            1_796_083_200_000
        );
        assert_eq!(
            Month {
                year: 1970,
                month: 1
            }
            .start(),
            0
        );
        assert_eq!(
            Month::of(-1),
            Month {
                year: 1969,
                month: 12
            }
        );
        let dec = Month {
            year: 2026,
            month: 12,
        };
        assert_eq!(
            dec.next(),
            Month {
                year: 2027,
                month: 1
            }
        );
        assert_eq!(Month::from_partition(&dec.partition()), Some(dec));
        assert_eq!(
            Month::from_partition("archived_notifications_y2026m13"),
            None
        );
        assert_eq!(Month::from_partition("other"), None);
    }
}
