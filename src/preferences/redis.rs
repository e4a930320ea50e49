//! The shared preference cache in Redis: one key per customer and recipient holding
//! `<version>|<json set>`. Writers publish through a compare-and-set on the version (Lua, atomic
//! in Redis); readers only fill absent keys. So every node sees the newest set any node wrote.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::{Error, Pair, Sets};
use crate::model::RecipientPreferences;

/// Sets the key to `ARGV[1]|ARGV[2]` with a TTL of `ARGV[3]` seconds, unless it already holds
/// that version or a newer one.
const PUBLISH: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local version = tonumber(string.match(current, '^(%-?%d+)|'))
  if version and version >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'EX', ARGV[3])
return 1
";

pub(super) struct RedisCache {
    connection: ConnectionManager,
    prefix: String,
    ttl_secs: u64,
    publish: redis::Script,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

fn unavailable(err: redis::RedisError) -> Error {
    Error::Cache(err.to_string())
}

impl RedisCache {
    /// Connects (the connection manager reconnects by itself later).
    pub(super) async fn connect(url: &str, prefix: &str, ttl: Duration) -> Result<Self, Error> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let connection =
            ConnectionManager::new_with_config(client, crate::idempotency::redis_config())
                .await
                .map_err(unavailable)?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            ttl_secs: ttl.as_secs().max(1),
            publish: redis::Script::new(PUBLISH),
        })
    }

    /// The key of one recipient. The customer id's length keeps `a:b` + `c` apart from `a` +
    /// `b:c`.
    fn key(&self, customer_id: &str, recipient: &str) -> String {
        format!(
            "{}pref:{}:{customer_id}:{recipient}",
            self.prefix,
            customer_id.len()
        )
    }

    /// The cached sets among `(customer, recipient)` pairs (one MGET).
    pub(super) async fn get_many(&self, pairs: &[Pair<'_>]) -> Result<Sets, Error> {
        if pairs.is_empty() {
            return Ok(Sets::new());
        }
        let keys: Vec<String> = pairs.iter().map(|(c, r)| self.key(c, r)).collect();
        let mut connection = self.connection.clone();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(pairs
            .iter()
            .zip(values)
            .filter_map(|((c, r), value)| {
                Some((((*c).to_owned(), (*r).to_owned()), decode(&value?)?))
            })
            .collect())
    }

    /// Publishes a set just written by `SetPreference`: Redis keeps it unless it already holds
    /// a newer version (another node's later change).
    pub(super) async fn publish(
        &self,
        customer_id: &str,
        recipient: &str,
        set: &RecipientPreferences,
    ) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        let _: i64 = self
            .publish
            .key(self.key(customer_id, recipient))
            .arg(set.version)
            .arg(encode_preferences(set)?)
            .arg(self.ttl_secs)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Fills the cache with sets just read from the store, in one pipeline of `SET … NX`: a
    /// reader never replaces anything. If a writer published meanwhile, its newer set stays;
    /// if the writer publishes later, its compare-and-set replaces this older one.
    pub(super) async fn fill(&self, sets: &Sets) -> Result<(), Error> {
        let mut pipe = redis::pipe();
        for ((customer_id, recipient), set) in sets {
            let value = format!("{}|{}", set.version, encode_preferences(set)?);
            pipe.cmd("SET")
                .arg(self.key(customer_id, recipient))
                .arg(value)
                .arg("EX")
                .arg(self.ttl_secs)
                .arg("NX")
                .ignore();
        }
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }
}

fn encode_preferences(set: &RecipientPreferences) -> Result<String, Error> {
    serde_json::to_string(&set.preferences)
        .map_err(|err| Error::Cache(format!("cannot encode preferences: {err}")))
}

/// Reads `<version>|<json>`; anything else is treated as absent (and re-read from the store).
fn decode(value: &str) -> Option<RecipientPreferences> {
    let (version, json) = value.split_once('|')?;
    Some(RecipientPreferences {
        version: version.parse().ok()?,
        preferences: serde_json::from_str(json).ok()?,
    })
}
