//! The synthetic configuration every measurement uses: N services, M
//! routes in four shapes (the shapes of the translator's `timing_print`
//! test, so numbers compare), and one upstream with two IP targets for
//! every `upstream_every`-th service, so the fleet also exercises EDS.

use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub services: usize,
    pub routes: usize,
    /// Every n-th service goes through an upstream (an EDS cluster); 0: none.
    pub upstream_every: usize,
}

pub fn service_name(i: usize) -> String {
    format!("svc{i}")
}

pub fn route_name(i: usize) -> String {
    format!("r{i}")
}

fn uses_upstream(s: &Shape, i: usize) -> bool {
    s.upstream_every > 0 && i.is_multiple_of(s.upstream_every)
}

/// The route body (without its service) for route `i`.
pub fn route(i: usize) -> Value {
    let mut r = json!({ "name": route_name(i) });
    match i % 4 {
        0 => r["paths"] = json!([format!("/r{i}")]),
        1 => {
            r["paths"] = json!([format!("/r{i}"), format!("~/x{i}/\\d+")]);
            r["methods"] = json!(["GET", "POST"]);
        }
        2 => {
            r["hosts"] = json!([format!("h{}.example.com", i % 10)]);
            r["paths"] = json!([format!("/h{i}")]);
        }
        _ => {
            r["hosts"] = json!(["*.wild.example.com"]);
            r["paths"] = json!([format!("/w{i}")]);
            r["strip_path"] = json!(false);
        }
    }
    r
}

/// Index of a route whose paths a PATCH can rewrite harmlessly (shape 0).
pub fn plain_route(k: usize, routes: usize) -> usize {
    let plain = routes.div_ceil(4).max(1);
    (k % plain) * 4
}

/// The Kong declarative document (`_format_version: "3.0"`).
pub fn document(s: &Shape) -> Value {
    let services = s.services.max(1);
    let mut routes: Vec<Vec<Value>> = vec![Vec::new(); services];
    for i in 0..s.routes {
        routes[i % services].push(route(i));
    }
    let mut upstreams = Vec::new();
    let svcs: Vec<Value> = routes
        .into_iter()
        .enumerate()
        .map(|(i, rs)| {
            let url = if uses_upstream(s, i) {
                let name = format!("pool{i}");
                upstreams.push(json!({
                    "name": name,
                    "targets": [
                        {"target": format!("10.2.{}.{}:8080", i / 250, i % 250)},
                        {"target": format!("10.3.{}.{}:8080", i / 250, i % 250)},
                    ],
                }));
                format!("http://{name}:8080")
            } else {
                format!("http://10.1.{}.{}:8080", i / 250, i % 250)
            };
            json!({"name": service_name(i), "url": url, "routes": rs})
        })
        .collect();
    json!({
        "_format_version": "3.0",
        "services": svcs,
        "upstreams": upstreams,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_shapes() {
        let d = document(&Shape {
            services: 10,
            routes: 100,
            upstream_every: 5,
        });
        let svcs = d["services"].as_array().unwrap();
        assert_eq!(svcs.len(), 10);
        let routes: usize = svcs
            .iter()
            .map(|s| s["routes"].as_array().unwrap().len())
            .sum();
        assert_eq!(routes, 100);
        assert_eq!(d["upstreams"].as_array().unwrap().len(), 2);
        assert_eq!(svcs[5]["url"], "http://pool5:8080");
        assert_eq!(route(plain_route(3, 100))["paths"][0], "/r12");
        assert!(plain_route(1000, 100) < 100);
    }
}
