//! Kong's `rate-limiting` with `policy: redis` on a real three-master Redis
//! Cluster (`scripts/redis-cluster.sh`, started by `scripts/services.sh`
//! and `scripts/test.sh`; `GANTRY_TEST_REDIS_CLUSTER` names its nodes), a
//! real `gantry-cp` and three `gantry-proxy` processes sharing the cluster.
//!
//! `redis_cluster_limit_holds_across_three_proxies`:
//! - six clients (`limit_by: header`), chosen so that two hash to each
//!   master, send three times their limit at once, spread over the three
//!   proxies: each client gets exactly its limit of 200s, with
//!   `X-RateLimit-Remaining-Minute` counting down 4..0 once each, and 429s
//!   for the rest; every proxy then refuses every client;
//! - the counters really are in the cluster: each client's minute and hour
//!   keys sit together on the master owning the client's slot, holding the
//!   admitted count, and every master holds some;
//! - cluster nodes that cannot be reached: `fault_tolerant` true lets
//!   requests through without rate-limit headers, false answers Kong's 500.
//!
//! Stopping one master of the shared cluster is not tested (the cluster is
//! shared with later runs; restarting and re-converging it is not cheap).
//!
//! Run: `./scripts/redis-cluster.sh start && cargo build --workspace --bins
//! && cargo nextest run -p gantry-e2e --test redis_cluster`.

use gantry_e2e::{
    Cp, Proxy, Resp, Upstream, clear_of_minute_boundary, http_client as client,
    redis_cluster_nodes, redis_command,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(15);
/// Requests per client per minute.
const LIMIT: usize = 5;
/// Clients per cluster master.
const CLIENTS_PER_NODE: usize = 2;

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.expect("body");
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// `{"ip", "port"}` entries for `redis.cluster_nodes`.
fn cluster_nodes_config(nodes: &[String]) -> Value {
    nodes
        .iter()
        .map(|n| {
            let (ip, port) = n.rsplit_once(':').expect("host:port");
            json!({"ip": ip, "port": port.parse::<u16>().expect("port")})
        })
        .collect()
}

/// Which of `nodes` owns the slot of `key`: asked of the first node, which
/// answers for its own slots and redirects (MOVED) for the others'.
async fn owner(nodes: &[String], key: &str) -> usize {
    match redis_command(&nodes[0], &["EXISTS", key])
        .await
        .expect("EXISTS")
    {
        Resp::Int(_) => 0,
        Resp::Error(e) if e.starts_with("MOVED ") => {
            let to = e.rsplit(' ').next().unwrap_or_default();
            nodes
                .iter()
                .position(|n| n == to)
                .unwrap_or_else(|| panic!("{key} lives on {to}, not one of {nodes:?}"))
        }
        other => panic!("EXISTS {key}: {other:?}"),
    }
}

/// The keys of the node at `addr` matching `pattern`.
async fn keys(addr: &str, pattern: &str) -> Vec<String> {
    match redis_command(addr, &["KEYS", pattern]).await.expect("KEYS") {
        Resp::Array(Some(items)) => items.iter().filter_map(Resp::text).collect(),
        other => panic!("KEYS {pattern} on {addr}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_limit_holds_across_three_proxies() {
    gantry_e2e::require_redis_cluster().await;
    let nodes = redis_cluster_nodes();
    assert_eq!(nodes.len(), 3, "three cluster masters: {nodes:?}");
    let cp = Cp::start().await;
    let up = Upstream::start("echo").await;
    let proxies = [
        Proxy::start(&cp, "gantry-rc-1").await,
        Proxy::start(&cp, "gantry-rc-2").await,
        Proxy::start(&cp, "gantry-rc-3").await,
    ];
    // Ports nothing listens on: cluster nodes that are down.
    let dead: Vec<_> = (0..2).map(|_| gantry_e2e::reserve_port()).collect();
    let dead_nodes: Vec<String> = dead
        .iter()
        .map(|p| format!("127.0.0.1:{}", p.port))
        .collect();

    cp.post("/services", json!({"name": "svc", "url": up.url()}))
        .await
        .expect(201);
    for r in ["shared", "tolerant", "strict"] {
        cp.post(
            "/services/svc/routes",
            json!({"name": r, "paths": [format!("/{r}")]}),
        )
        .await
        .expect(201);
    }
    // fault_tolerant false: a Redis error shows as a 500, never as a
    // request let through uncounted.
    let plugin = cp
        .post(
            "/routes/shared/plugins",
            json!({"name": "rate-limiting", "config": {
                "minute": LIMIT, "hour": 1000, "policy": "redis",
                "limit_by": "header", "header_name": "x-client",
                "fault_tolerant": false,
                "redis": {"cluster_nodes": cluster_nodes_config(&nodes), "timeout": 2000}}}),
        )
        .await
        .expect(201);
    let plugin_id = plugin["id"].as_str().expect("plugin id").to_string();
    assert_eq!(
        plugin["config"]["redis"]["cluster_nodes"],
        cluster_nodes_config(&nodes),
        "{plugin}"
    );
    cp.post(
        "/routes/tolerant/plugins",
        json!({"name": "rate-limiting", "config": {"minute": LIMIT, "policy": "redis",
               "fault_tolerant": true,
               "redis": {"cluster_nodes": cluster_nodes_config(&dead_nodes), "timeout": 500}}}),
    )
    .await
    .expect(201);
    let rev = cp
        .post(
            "/routes/strict/plugins",
            json!({"name": "rate-limiting", "config": {"minute": LIMIT, "policy": "redis",
                   "fault_tolerant": false,
                   "redis": {"cluster_nodes": cluster_nodes_config(&dead_nodes), "timeout": 500}}}),
        )
        .await
        .committed();
    for p in &proxies {
        cp.wait_synced(&p.node_id, rev, CONVERGE).await;
    }

    // Clients by the master their counters hash to (the hash tag is
    // `{<plugin id>:<client>}`): two on each.
    let mut by_node: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for i in 0..500 {
        if by_node.len() == nodes.len() && by_node.values().all(|v| v.len() == CLIENTS_PER_NODE) {
            break;
        }
        let name = format!("client-{i}");
        let n = owner(&nodes, &format!("{{{plugin_id}:{name}}}")).await;
        let on = by_node.entry(n).or_default();
        if on.len() < CLIENTS_PER_NODE {
            on.push(name);
        }
    }
    let clients: Vec<(usize, String)> = by_node
        .iter()
        .flat_map(|(n, cs)| cs.iter().map(|c| (*n, c.clone())))
        .collect();
    assert_eq!(clients.len(), nodes.len() * CLIENTS_PER_NODE, "{by_node:?}");

    // Each proxy opens its cluster connection (as a running proxy has).
    let c = client();
    for (i, p) in proxies.iter().enumerate() {
        let a = send(
            c.get(format!("{}/shared", p.proxy_url()))
                .header("x-client", format!("warm-up-{i}")),
        )
        .await;
        assert_eq!(a.status, 200, "warm-up through {}: {}", p.node_id, a.body);
    }

    // Every client sends three times its limit at once, spread over the
    // three proxies: exactly LIMIT pass per client.
    clear_of_minute_boundary(20.0).await;
    let seen = up.requests();
    let mut tasks = Vec::new();
    for (ci, (_, name)) in clients.iter().enumerate() {
        for j in 0..3 * LIMIT {
            let url = format!("{}/shared", proxies[(ci + j) % 3].proxy_url());
            let req = c.get(url).header("x-client", name.as_str());
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                let a = send(req).await;
                let remaining = a.header("x-ratelimit-remaining-minute").map(String::from);
                (name, a.status, remaining, a.body)
            }));
        }
    }
    let mut per_client: BTreeMap<String, (Vec<String>, usize)> = BTreeMap::new();
    for t in tasks {
        let (name, status, remaining, body) = t.await.expect("request task");
        let remaining = remaining
            .unwrap_or_else(|| panic!("{name}: {status} without X-RateLimit-Remaining-Minute"));
        let e = per_client.entry(name.clone()).or_default();
        match status {
            200 => e.0.push(remaining),
            429 => {
                assert_eq!(remaining, "0", "{name}: a 429 with {remaining} remaining");
                e.1 += 1;
            }
            other => panic!("{name}: unexpected status {other}: {body}"),
        }
    }
    let admitted_each: Vec<String> = (0..LIMIT).rev().map(|r| r.to_string()).collect();
    for (_, name) in &clients {
        let (mut ok, limited) = per_client.remove(name).expect("answers for every client");
        ok.sort_by(|a, b| b.cmp(a));
        assert_eq!(
            (&ok, limited),
            (&admitted_each, 2 * LIMIT),
            "{name}: the 200s' X-RateLimit-Remaining-Minute, and the number of 429s"
        );
    }
    assert_eq!(up.requests(), seen + (clients.len() * LIMIT) as u64);

    // Every proxy now refuses every client, whichever served it.
    for (_, name) in &clients {
        for p in &proxies {
            let a = send(
                c.get(format!("{}/shared", p.proxy_url()))
                    .header("x-client", name.as_str()),
            )
            .await;
            assert_eq!(a.status, 429, "{name} through {}", p.node_id);
            assert_eq!(a.header("x-ratelimit-remaining-minute"), Some("0"));
            assert_eq!(a.body, json!({"message": "API rate limit exceeded"}));
        }
    }

    // The counters are in the cluster: a client's minute and hour keys on
    // the master owning its slot (one slot: the hash tag), holding the
    // count of requests admitted; every master holds some.
    let mut found = Vec::new();
    for (n, addr) in nodes.iter().enumerate() {
        let ks = keys(addr, &format!("gantry:rl:{{{plugin_id}:client-*")).await;
        found.push(ks.len());
        for k in ks {
            let client = k
                .split_once('{')
                .and_then(|(_, r)| r.split_once('}'))
                .and_then(|(tag, _)| tag.rsplit_once(':'))
                .map(|(_, c)| c.to_string())
                .unwrap_or_else(|| panic!("unexpected key {k}"));
            let (home, _) = clients
                .iter()
                .find(|(_, c)| *c == client)
                .unwrap_or_else(|| panic!("key {k} of an unknown client"));
            assert_eq!(*home, n, "{k} is on {addr}, not {}", nodes[*home]);
            let v = redis_command(addr, &["GET", &k]).await.expect("GET");
            assert_eq!(v.text(), Some(LIMIT.to_string()), "{k} on {addr}");
        }
    }
    assert_eq!(
        found,
        vec![CLIENTS_PER_NODE * 2; nodes.len()],
        "keys per master (each client's minute and hour windows)"
    );

    // Cluster nodes that cannot be reached: fault_tolerant lets requests
    // through, without counters; otherwise Kong's 500.
    let a = send(c.get(format!("{}/tolerant", proxies[0].proxy_url()))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-ratelimit-limit-minute"), None);
    let a = send(c.get(format!("{}/strict", proxies[1].proxy_url()))).await;
    assert_eq!(
        (a.status, &a.body),
        (500, &json!({"message": "An unexpected error occurred"}))
    );
    drop(dead);
}
