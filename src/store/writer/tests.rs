use std::time::Duration;

use super::*;
use crate::model::{Inserted, now_millis};
use sqlx::Row;

use crate::store::test_support::{notification, sqlite_store};
use crate::store::{Commit, StoreOptions};

/// Inserts one notification, keyed by its commit class, in a commit of that class.
fn insert(
    store: &Store,
    commit: Commit,
) -> impl std::future::Future<Output = Result<Vec<Inserted>, Error>> + use<> {
    let store = store.clone();
    async move {
        let items = vec![notification(&format!("{commit:?}"))];
        store
            .insert_notifications(commit, &items, &[], now_millis(), 0)
            .await
    }
}

/// Waits (without a deadline of its own: the test's timeouts bound it) until an express
/// commit queues at the gate.
async fn express_queued(store: &Store) {
    let gate = store.gate.as_ref().unwrap();
    while !gate.express_waiting() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits (bounded by the test's timeouts) until `count` writes of `class` queue at the gate.
async fn queued(store: &Store, class: Priority, count: usize) {
    let gate = store.gate.as_ref().unwrap();
    while gate.queued(class) < count {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The row id an insert of one notification got.
fn id_of(results: &[Inserted]) -> i64 {
    match results {
        [Inserted::New(id)] => id.0,
        other => panic!("not one new notification: {other:?}"),
    }
}

/// Stores `key` in an express commit of its own.
fn express(store: &Store, key: &str) -> tokio::task::JoinHandle<Result<Vec<Inserted>, Error>> {
    let (store, items) = (store.clone(), vec![notification(key)]);
    tokio::spawn(async move {
        store
            .insert_notifications(Commit::Express, &items, &[], now_millis(), 0)
            .await
    })
}

/// A group commit of two calls of two notifications each, keyed `keys`, started while a background write holds the connection and two express commits wait: the first
/// express commit goes when the background write ends, then the group commit (never two
/// express turns in a row while others wait), which then finds the second express commit
/// waiting after its first call. Returns the group commit's outcome and the two express
/// commits' row ids.
async fn group_commit_beside_express(
    store: &Store,
    keys: [&str; 4],
) -> (crate::store::insert::Stored, i64, i64) {
    async fn wait<T>(task: tokio::task::JoinHandle<T>) -> T {
        let joined = tokio::time::timeout(Duration::from_secs(10), task).await;
        joined.unwrap().unwrap()
    }
    let background = store.writer(Durability::Relaxed).await.unwrap();
    let group = {
        let store = store.clone();
        let items: Vec<_> = keys.into_iter().map(notification).collect();
        tokio::spawn(async move {
            store
                .insert_calls(Commit::Group, &items, &[2, 2], &[], now_millis(), 0)
                .await
        })
    };
    queued(store, Priority::Caller, 1).await;
    let first = express(store, "express-1");
    queued(store, Priority::Express, 1).await;
    let second = express(store, "express-2");
    queued(store, Priority::Express, 2).await;
    drop(background);
    let group = wait(group).await;
    let first = id_of(&wait(first).await.unwrap());
    let second = id_of(&wait(second).await.unwrap());
    (group, first, second)
}

const GROUP_KEYS: [&str; 4] = ["group-0", "group-1", "group-2", "group-3"];

/// A turn ended on a runtime that is not running (as the main runtime is not, for the
/// connection's sake, when thousands of deliveries are queued on it) still puts the
/// connection back: the next writer, on the writers' runtime, gets it at once. Fails if
/// the connection's return is spawned on the runtime that ended the turn.
#[test]
fn a_turn_ended_on_another_runtime_hands_the_connection_back_on_the_writers_runtime() {
    let runtime = |threads| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap()
    };
    let (writers, main) = (runtime(1), runtime(1));
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("floodgate.db").display());
    let options = StoreOptions {
        writers_runtime: Some(writers.handle().clone()),
        ..StoreOptions::default()
    };
    let store = writers.block_on(Store::connect(&url, &options)).unwrap();
    // The main runtime's one worker thread is kept busy while its turn ends.
    let (busy, released) = std::sync::mpsc::channel::<()>();
    main.block_on({
        let store = store.clone();
        async move {
            let conn = store.writer(Durability::Relaxed).await.unwrap();
            tokio::spawn(async move { released.recv().ok() });
            tokio::task::yield_now().await;
            drop(conn);
        }
    });
    let next = writers.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), store.writer(Durability::Relaxed)).await
    });
    busy.send(()).unwrap();
    assert!(
        matches!(next, Ok(Ok(_))),
        "the next writer waited for a runtime that was not running"
    );
}

#[tokio::test]
async fn a_group_commit_is_cut_between_two_calls_for_a_waiting_express_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let (group, first, second) = group_commit_beside_express(&store, GROUP_KEYS).await;
    assert!(group.failed.is_none(), "{:?}", group.failed);
    let ids: Vec<i64> = group
        .results
        .iter()
        .map(|result| id_of(std::slice::from_ref(result)))
        .collect();
    // Row ids are given in insert order: the second express commit was written after the
    // group commit's first call and before its second.
    assert!(first < ids[0], "first express {first}, group {ids:?}");
    assert!(
        ids[1] < second && second < ids[2],
        "second express {second}, group {ids:?}"
    );
}

/// The next turn trusts the connection's mode only after a turn that said it finished
/// cleanly. A turn that leaves a transaction open (as a failed commit can) says nothing, so
/// the next one sets the mode, finds the transaction and rolls it back. Were the mode
/// trusted, the next commit's `INSERT` would run inside that open transaction and never be
/// committed.
#[tokio::test]
async fn a_turn_that_did_not_finish_cleanly_gets_the_connection_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    insert(&store, Commit::Express).await.unwrap();
    assert!(
        store.last_mode.is(Durability::Durable),
        "a commit that finished cleanly leaves its mode known"
    );

    let mut conn = store.writer(Durability::Durable).await.unwrap();
    conn.execute("BEGIN").await.unwrap();
    drop(conn);
    assert!(!store.last_mode.is(Durability::Durable));

    insert(&store, Commit::Group).await.unwrap();
    let row = sqlx::query("SELECT COUNT(*) FROM notifications")
        .fetch_one(&store.read)
        .await
        .unwrap();
    assert_eq!(
        row.try_get::<i64, _>(0).unwrap(),
        2,
        "both commits are stored"
    );
}

/// The mode skipped between turns must still be the one each write promises: a durable
/// write after a background one runs at `FULL` (SQLite's 2), a background one at `NORMAL`
/// (1), and two durable writes in a row stay at `FULL`.
#[tokio::test]
async fn every_write_runs_in_the_mode_its_durability_needs() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    for (durability, expected) in [
        (Durability::Relaxed, 1),
        (Durability::Durable, 2),
        (Durability::Durable, 2),
        (Durability::Relaxed, 1),
        (Durability::Relaxed, 1),
    ] {
        let mut conn = store.writer(durability).await.unwrap();
        let row = sqlx::query("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(
            row.try_get::<i64, _>(0).unwrap(),
            expected,
            "{durability:?}"
        );
        conn.finished_cleanly();
    }
}

/// Closing the store waits for the write under way (its connection is out of the pool,
/// and the pool waits for it), and no write after it gets a connection.
#[tokio::test]
async fn closing_the_store_waits_for_the_write_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    insert(&store, Commit::Express).await.unwrap();
    let under_way = store.writer(Durability::Relaxed).await.unwrap();
    let closing = tokio::spawn({
        let store = store.clone();
        async move { store.close().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!closing.is_finished(), "close waits for the turn under way");
    drop(under_way);
    closing.await.unwrap();
    assert!(store.writer(Durability::Durable).await.is_err());
    assert!(insert(&store, Commit::Group).await.is_err());
}

#[tokio::test]
async fn a_key_repeated_across_the_cut_is_one_notification() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let keys = ["dup-0", "dup-1", "dup-0", "dup-3"];
    let (group, _, second) = group_commit_beside_express(&store, keys).await;
    assert!(group.failed.is_none(), "{:?}", group.failed);
    let [
        Inserted::New(first),
        Inserted::New(_),
        again,
        Inserted::New(last),
    ] = group.results[..]
    else {
        panic!("{:?}", group.results);
    };
    assert_eq!(
        again,
        Inserted::Duplicate(first),
        "the repeat in the second call"
    );
    assert!(first.0 < second && second < last.0, "the commit was cut");
    let row = sqlx::query("SELECT COUNT(*) FROM notifications WHERE idempotency_key LIKE 'dup-%'")
        .fetch_one(&store.read)
        .await
        .unwrap();
    assert_eq!(row.try_get::<i64, _>(0).unwrap(), 3);
}

#[tokio::test]
async fn a_cut_group_commit_keeps_the_calls_committed_before_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let stored = |store: Store| async move {
        let row =
            sqlx::query("SELECT COUNT(*) FROM notifications WHERE idempotency_key LIKE 'group-%'")
                .fetch_one(&store.read)
                .await
                .unwrap();
        row.try_get::<i64, _>(0).unwrap()
    };
    store
        .writer(Durability::Relaxed)
        .await
        .unwrap()
        .execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON notifications \
             WHEN NEW.idempotency_key = 'group-3' BEGIN SELECT RAISE(FAIL, 'refused'); END",
        )
        .await
        .unwrap();

    // Not cut (nothing waits): the second call's failure undoes the first call too.
    let items: Vec<_> = (0..4)
        .map(|i| notification(&format!("group-{i}")))
        .collect();
    let alone = store
        .insert_calls(Commit::Group, &items, &[2, 2], &[], now_millis(), 0)
        .await;
    assert!(alone.failed.is_some() && alone.results.is_empty());
    assert_eq!(stored(store.clone()).await, 0);

    // Cut for an express commit: the first call was committed before the failure.
    let (group, _, _) = group_commit_beside_express(&store, GROUP_KEYS).await;
    assert!(group.failed.is_some(), "the trigger did not refuse");
    assert_eq!(group.results.len(), 2, "{:?}", group.results);
    assert!(group.results.iter().all(|r| matches!(r, Inserted::New(_))));
    assert_eq!(stored(store.clone()).await, 2);
}

#[tokio::test]
async fn an_express_commit_goes_between_two_statements_of_a_background_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let wait = |task| tokio::time::timeout(Duration::from_secs(10), task);

    // A background batch holds the write connection; a group commit and an express commit
    // queue behind it.
    let batch = store.writer(Durability::Relaxed).await.unwrap();
    let group = tokio::spawn(insert(&store, Commit::Group));
    let express = tokio::spawn(insert(&store, Commit::Express));
    express_queued(&store).await;

    // Between two of its statements the batch lends the connection: the express commit is
    // written, and the batch has the connection back before the group commit.
    let mut batch = store.let_express_through(batch).await.unwrap();
    wait(express).await.unwrap().unwrap().unwrap();
    assert!(
        !group.is_finished(),
        "the group commit went before the batch's end"
    );
    // The batch's next statement runs on the connection it got back.
    batch.execute("SELECT 1").await.unwrap();
    drop(batch);
    wait(group).await.unwrap().unwrap().unwrap();
}
