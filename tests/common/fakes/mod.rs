//! Local fakes of the push, email and SMS providers, each speaking its provider's wire format and
//! checking what real providers check (signed tokens, auth, headers), so the channel tests see
//! the sinks' real requests. Each can be scripted, per recipient, to answer with errors first.

pub mod apns;
pub mod fcm;
pub mod sms;
pub mod smtp;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Answers to give one recipient before succeeding: each attempt takes the next.
pub struct Script<R> {
    rules: Mutex<HashMap<String, VecDeque<R>>>,
    /// When each attempt for each recipient arrived.
    attempts: Mutex<HashMap<String, Vec<Instant>>>,
}

impl<R> Default for Script<R> {
    fn default() -> Self {
        Self {
            rules: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
        }
    }
}

impl<R: Clone> Script<R> {
    /// The next attempts for `recipient` get these answers, in order; later ones succeed.
    pub fn answer(&self, recipient: &str, replies: impl IntoIterator<Item = R>) {
        self.rules
            .lock()
            .unwrap()
            .entry(recipient.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Counts an attempt for `recipient` and says how to answer it (`None`: succeed).
    pub fn next(&self, recipient: &str) -> Option<R> {
        self.attempts
            .lock()
            .unwrap()
            .entry(recipient.to_owned())
            .or_default()
            .push(Instant::now());
        self.rules
            .lock()
            .unwrap()
            .get_mut(recipient)
            .and_then(VecDeque::pop_front)
    }

    /// When the attempts for `recipient` arrived.
    pub fn attempts(&self, recipient: &str) -> Vec<Instant> {
        self.attempts
            .lock()
            .unwrap()
            .get(recipient)
            .cloned()
            .unwrap_or_default()
    }
}

/// What a fake accepted, in order.
pub struct Recorded<T> {
    items: Mutex<Vec<T>>,
}

impl<T> Default for Recorded<T> {
    fn default() -> Self {
        Self {
            items: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Clone> Recorded<T> {
    pub fn push(&self, item: T) {
        self.items.lock().unwrap().push(item);
    }

    pub fn all(&self) -> Vec<T> {
        self.items.lock().unwrap().clone()
    }

    /// Waits until one accepted item matches, or panics after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, matches: impl Fn(&T) -> bool) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.items.lock().unwrap().iter().find(|i| matches(i)) {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "the fake never accepted the expected item"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A test key from `tests/fixtures`.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// A fresh local port and its `http://` URL (bound first, so a fake can name itself in its state).
pub async fn bind() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

/// Serves `router` (HTTP/1.1, and HTTP/2 with prior knowledge).
pub fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    })
}
