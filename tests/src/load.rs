//! Load for end-to-end tests: clients that keep requesting while a test
//! kills, restarts or reconfigures something, counting what failed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Clients that keep GETting `url` until stopped, counting 200s and
/// recording anything else.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<BTreeMap<String, u64>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(client: &reqwest::Client, urls: Vec<String>, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let workers = urls
            .into_iter()
            .map(|url| {
                let (stop, ok, failures, seen) =
                    (stop.clone(), ok.clone(), failures.clone(), seen.clone());
                let client = client.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match crate::send_json(client.get(&url)).await {
                            Ok((200, b)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                let up = b["upstream"].as_str().unwrap_or("?").to_string();
                                *seen.lock().unwrap().entry(up).or_default() += 1;
                            }
                            Ok((s, b)) => failures
                                .lock()
                                .unwrap()
                                .push(format!("{:?} {s} {b}", Instant::now())),
                            Err(e) => failures
                                .lock()
                                .unwrap()
                                .push(format!("{:?} error: {e:?}", Instant::now())),
                        }
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            seen,
            workers,
        }
    }

    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients; (OK count, failures, answers per upstream).
    pub async fn finish(self) -> (u64, Vec<String>, BTreeMap<String, u64>) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.expect("load worker");
        }
        let failures = self.failures.lock().unwrap().clone();
        let seen = self.seen.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures, seen)
    }
}
