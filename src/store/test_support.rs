//! What the store's unit tests share: a store on a fresh SQLite file, and a notification to
//! insert into it.

use super::{Store, StoreOptions};
use crate::model::{Channel, CustomerId, Lane, NewNotification};

/// A store on a new SQLite database in `dir`, with the default options.
pub(super) async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
    let url = format!("sqlite://{}", dir.path().join("floodgate.db").display());
    Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap()
}

/// A transactional webhook notification of customer `acme` to recipient `u`, stored under
/// `key`, with `{}` as its payload; tests change the fields they care about.
pub(super) fn notification(key: &str) -> NewNotification {
    NewNotification {
        customer_id: CustomerId::parse("acme").unwrap(),
        idempotency_key: key.into(),
        recipient: "u".into(),
        lane: Lane::Transactional,
        payload: b"{}".to_vec(),
        send_at: None,
        expires_at: None,
        channel: Channel::Webhook,
        suppressed: None,
        template: None,
    }
}
