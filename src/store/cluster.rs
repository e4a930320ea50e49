//! The cluster's tables (PostgreSQL only): live nodes and bucket leases.
//!
//! Every time in these tables is the database's clock (`clock_timestamp()`, epoch milliseconds),
//! never a node's, so nodes with skewed clocks still agree on when a lease has expired. Bucket
//! lists are bound as one comma-separated text parameter and split in SQL, so statements keep
//! one shape whatever the number of buckets.

use sqlx::Row;

use super::{Backend, Durability, Error, Store};
use crate::model::{EpochMillis, State};

/// The database clock, in epoch milliseconds.
const DB_NOW: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// A bucket this node holds: its number and the lease's epoch (the fencing token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldBucket {
    pub bucket: u16,
    pub epoch: i64,
}

/// One node as the node table sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub node_id: String,
    pub started_at: EpochMillis,
    /// Milliseconds since its last heartbeat, by the database clock.
    pub heartbeat_age_ms: i64,
}

/// One bucket's lease as the lease table sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub bucket: u16,
    pub owner: Option<String>,
    pub epoch: i64,
    /// Milliseconds until the lease expires (negative: expired), by the database clock.
    pub expires_in_ms: i64,
    pub handovers: i64,
    pub takeovers: i64,
}

/// What a takeover did: the buckets taken, and the notifications their former owner still held
/// that went back to pending for redelivery.
#[derive(Debug, Default)]
pub struct Takeover {
    pub taken: Vec<HeldBucket>,
    pub released: u64,
}

impl Store {
    /// Creates the lease rows of buckets `0..buckets` that do not exist yet (no owner).
    pub async fn ensure_buckets(&self, buckets: u16) -> Result<(), Error> {
        self.require_postgres()?;
        sqlx::query(
            "INSERT INTO bucket_leases (bucket) SELECT generate_series(0, $1 - 1) \
             ON CONFLICT (bucket) DO NOTHING",
        )
        .bind(i64::from(buckets))
        .execute(&mut *self.writer(Durability::Relaxed).await?)
        .await?;
        Ok(())
    }

    /// Records that `node` is alive now.
    pub async fn heartbeat(&self, node: &str, started_at: EpochMillis) -> Result<(), Error> {
        self.require_postgres()?;
        let sql = format!(
            "INSERT INTO cluster_nodes (node_id, started_at, heartbeat_at) VALUES ($1, $2, {DB_NOW}) \
             ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, \
               started_at = excluded.started_at"
        );
        sqlx::query(&sql)
            .bind(node)
            .bind(started_at)
            .execute(&mut *self.writer(Durability::Relaxed).await?)
            .await?;
        Ok(())
    }

    /// Nodes whose last heartbeat is younger than `ttl_ms`, by id.
    pub async fn live_nodes(&self, ttl_ms: i64) -> Result<Vec<String>, Error> {
        self.require_postgres()?;
        let sql = format!(
            "SELECT node_id FROM cluster_nodes WHERE heartbeat_at > {DB_NOW} - $1 ORDER BY node_id"
        );
        let rows = sqlx::query(&sql).bind(ttl_ms).fetch_all(&self.read).await?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0).map_err(Error::from))
            .collect()
    }

    /// Removes `node` from the node table (a clean shutdown), so the others stop counting it at
    /// once instead of after its heartbeat ages out.
    pub async fn leave_cluster(&self, node: &str) -> Result<(), Error> {
        self.require_postgres()?;
        sqlx::query("DELETE FROM cluster_nodes WHERE node_id = $1")
            .bind(node)
            .execute(&mut *self.writer(Durability::Relaxed).await?)
            .await?;
        Ok(())
    }

    /// Extends every lease `node` holds by `ttl_ms` from now and returns them. A bucket missing
    /// from the answer was taken by another node after its lease expired.
    pub async fn renew_leases(&self, node: &str, ttl_ms: i64) -> Result<Vec<HeldBucket>, Error> {
        self.require_postgres()?;
        let sql = format!(
            "UPDATE bucket_leases SET expires_at = {DB_NOW} + $2 WHERE owner = $1 \
             RETURNING bucket, epoch"
        );
        let rows = sqlx::query(&sql)
            .bind(node)
            .bind(ttl_ms)
            .fetch_all(&mut *self.writer(Durability::Relaxed).await?)
            .await?;
        rows.iter().map(held_from_row).collect()
    }

    /// Takes those of `buckets` that have no owner or whose lease has expired, with the epoch
    /// raised by one, and in the same transaction returns to pending every notification still
    /// in flight for a customer of a taken bucket (`in_taken` says which customers those are):
    /// whatever the former owner had under way is redelivered, and its late outcome writes find
    /// the row no longer in flight under their claim, so they are refused.
    pub async fn take_buckets(
        &self,
        node: &str,
        buckets: &[u16],
        ttl_ms: i64,
        now: EpochMillis,
        in_taken: impl Fn(&str, &[HeldBucket]) -> bool,
    ) -> Result<Takeover, Error> {
        self.require_postgres()?;
        if buckets.is_empty() {
            return Ok(Takeover::default());
        }
        let mut conn = self.writer(Durability::Relaxed).await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let sql = format!(
            "UPDATE bucket_leases SET owner = $1, epoch = epoch + 1, expires_at = {DB_NOW} + $2, \
               takeovers = takeovers + CASE WHEN owner IS NULL THEN 0 ELSE 1 END \
             WHERE bucket = ANY(string_to_array($3, ',')::BIGINT[]) \
               AND (owner IS NULL OR expires_at <= {DB_NOW}) \
             RETURNING bucket, epoch"
        );
        let rows = sqlx::query(&sql)
            .bind(node)
            .bind(ttl_ms)
            .bind(bucket_list(buckets))
            .fetch_all(&mut *tx)
            .await?;
        let taken = rows
            .iter()
            .map(held_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let mut released = 0;
        if !taken.is_empty() {
            // The customers with rows in flight (a small set: the actors' windows), those of the
            // taken buckets picked here (the bucket hash lives in Rust), released in one
            // statement. Customer ids never contain a comma, so the list binds as one text.
            let in_flight: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT customer_id FROM notifications WHERE state = $1",
            )
            .bind(State::InFlight.code())
            .fetch_all(&mut *tx)
            .await?;
            let customers: Vec<String> = in_flight
                .into_iter()
                .filter(|customer| in_taken(customer, &taken))
                .collect();
            if !customers.is_empty() {
                released = sqlx::query(
                    "UPDATE notifications SET state = $1, due_at = $2, lease_until = NULL, \
                       updated_at = $2 \
                     WHERE state = $3 AND customer_id = ANY(string_to_array($4, ','))",
                )
                .bind(State::Pending.code())
                .bind(now)
                .bind(State::InFlight.code())
                .bind(customers.join(","))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
        }
        tx.commit().await?;
        Ok(Takeover { taken, released })
    }

    /// Gives up `node`'s leases on `buckets` (a planned handover: the node has drained them), so
    /// the next owner may take them at once.
    pub async fn release_buckets(&self, node: &str, buckets: &[u16]) -> Result<u64, Error> {
        self.require_postgres()?;
        if buckets.is_empty() {
            return Ok(0);
        }
        let released = sqlx::query(
            "UPDATE bucket_leases SET owner = NULL, expires_at = 0, handovers = handovers + 1 \
             WHERE owner = $1 AND bucket = ANY(string_to_array($2, ',')::BIGINT[])",
        )
        .bind(node)
        .bind(bucket_list(buckets))
        .execute(&mut *self.writer(Durability::Relaxed).await?)
        .await?;
        Ok(released.rows_affected())
    }

    /// The owner of every bucket whose lease has not expired.
    pub async fn bucket_owners(&self) -> Result<Vec<(u16, String)>, Error> {
        self.owners_where("TRUE", None).await
    }

    /// The owner of `bucket`, unless its lease has expired or it has none.
    pub async fn bucket_owner(&self, bucket: u16) -> Result<Option<String>, Error> {
        let owners = self.owners_where("bucket = $1", Some(bucket)).await?;
        Ok(owners.into_iter().next().map(|(_, owner)| owner))
    }

    async fn owners_where(
        &self,
        filter: &str,
        bucket: Option<u16>,
    ) -> Result<Vec<(u16, String)>, Error> {
        self.require_postgres()?;
        let sql = format!(
            "SELECT bucket, owner FROM bucket_leases \
             WHERE {filter} AND owner IS NOT NULL AND expires_at > {DB_NOW}"
        );
        let mut query = sqlx::query(&sql);
        if let Some(bucket) = bucket {
            query = query.bind(i64::from(bucket));
        }
        query
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|row| Ok((bucket_from(row.try_get(0)?)?, row.try_get(1)?)))
            .collect()
    }

    /// The node table and every bucket's lease, for `floodgate cluster status`.
    pub async fn cluster_status(&self) -> Result<(Vec<NodeRow>, Vec<LeaseRow>), Error> {
        self.require_postgres()?;
        let sql = format!(
            "SELECT node_id, started_at, {DB_NOW} - heartbeat_at FROM cluster_nodes ORDER BY node_id"
        );
        let nodes = sqlx::query(&sql)
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|row| {
                Ok(NodeRow {
                    node_id: row.try_get(0)?,
                    started_at: row.try_get(1)?,
                    heartbeat_age_ms: row.try_get(2)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let sql = format!(
            "SELECT bucket, owner, epoch, expires_at - {DB_NOW}, handovers, takeovers \
             FROM bucket_leases ORDER BY bucket"
        );
        let leases = sqlx::query(&sql)
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|row| {
                Ok(LeaseRow {
                    bucket: bucket_from(row.try_get(0)?)?,
                    owner: row.try_get(1)?,
                    epoch: row.try_get(2)?,
                    expires_in_ms: row.try_get(3)?,
                    handovers: row.try_get(4)?,
                    takeovers: row.try_get(5)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok((nodes, leases))
    }

    /// Cluster tables exist on PostgreSQL only.
    fn require_postgres(&self) -> Result<(), Error> {
        match self.backend {
            Backend::Postgres => Ok(()),
            Backend::Sqlite => Err(Error::Corrupt(
                "cluster ownership needs PostgreSQL; a SQLite node owns every customer".into(),
            )),
        }
    }
}

/// `"3,17,200"`: a bucket list as one bound parameter.
fn bucket_list(buckets: &[u16]) -> String {
    buckets
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn held_from_row(row: &sqlx::any::AnyRow) -> Result<HeldBucket, Error> {
    Ok(HeldBucket {
        bucket: bucket_from(row.try_get(0)?)?,
        epoch: row.try_get(1)?,
    })
}

fn bucket_from(value: i64) -> Result<u16, Error> {
    u16::try_from(value).map_err(|_| Error::Corrupt(format!("bucket number {value} out of range")))
}

impl Store {
    /// Sends `payload` on the PostgreSQL notification channel `channel` (delivered to listeners
    /// when this autocommit statement commits).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), Error> {
        self.require_postgres()?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.read)
            .await?;
        Ok(())
    }
}
