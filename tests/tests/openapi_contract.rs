//! The admin API's OpenAPI document is its contract: schemathesis (pinned,
//! installed by `scripts/schemathesis.sh`) generates requests from
//! `GET /openapi.json` of a fresh gantry-cp, valid and invalid ones, and
//! checks every answer against the document: no 5xx, only documented
//! statuses, content types, headers and bodies, schema-valid requests
//! accepted, schema-violating ones refused, undocumented methods 405.
//!
//! The run is bounded in time and seeded; its configuration (checks,
//! workers, and the hook that explains the refusals no schema can foresee,
//! such as a reference to an entity that does not exist) is
//! `tests/schemathesis.toml`. On Postgres when `GANTRY_TEST_DATABASE_URL`
//! is set (as `scripts/test.sh` sets it), else on SQLite.

use gantry_e2e::{Backend, Cp, CpOptions, pg_url, repo_root};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Seconds schemathesis may spend in all. Its phases share the budget: the
/// coverage phase (each operation's boundary and invalid values) takes most
/// of it, fuzzing the rest; about 105 s for the whole test here.
const MAX_TIME_S: &str = "100";
/// A fixed seed, so a failure is reproduced by running the test again.
const SEED: &str = "7355";

/// `GANTRY_SCHEMATHESIS_BIN`, else what `scripts/schemathesis.sh` installs.
fn schemathesis() -> PathBuf {
    if let Some(p) = std::env::var_os("GANTRY_SCHEMATHESIS_BIN") {
        return PathBuf::from(p);
    }
    let script = repo_root().join("scripts").join("schemathesis.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(out.status.success(), "{} failed", script.display());
    let printed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    let bin = PathBuf::from(&printed);
    assert!(
        bin.exists(),
        "scripts/schemathesis.sh printed {printed:?}, which does not exist"
    );
    bin
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_honours_its_openapi_document() {
    let st = schemathesis();
    let backend = if pg_url().is_some() {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    // With the bootstrap token: the run may create RBAC users, which turns
    // authentication on; the bootstrap super-admin is never locked out.
    let token = "contract-test-bootstrap-token-0123";
    let opts = CpOptions {
        admin_token: Some(token.into()),
        ..CpOptions::default()
    };
    let cp = Cp::start_with(backend, &[], opts).await;
    let schema = format!("{}/openapi.json", cp.base);
    let header = format!("Kong-Admin-Token: {token}");
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&st)
            .current_dir(repo_root())
            .args(["--config-file", "tests/schemathesis.toml", "run", &schema])
            .args(["--header", &header])
            .args(["--max-time", MAX_TIME_S, "--seed", SEED])
            .args(["--phases", "examples,coverage,fuzzing", "--no-color"])
            // A generator that discards many of its own candidates (several
            // free path parameters) says nothing about the API; on a slow
            // machine it failed the run as a health check.
            .args(["--suppress-health-check", "filter_too_much"])
            // Reports and the example database stay out of the work tree.
            .args(["--generation-database", "none"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", st.display()))
    })
    .await
    .expect("schemathesis thread");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found the admin API and its OpenAPI document disagree \
         ({:?} on {backend:?}, seed {SEED}):\n{report}\n--- gantry-cp log ---\n{}",
        started.elapsed(),
        gantry_e2e::tail(cp.log_path(), 40),
    );
    // The phases with their times, and the summary.
    let lines: Vec<&str> = report.lines().collect();
    let phases = lines
        .iter()
        .filter(|l| l.contains(" (in ") || l.contains(" passed") || l.contains(" failed"));
    let summary = &lines[lines.len().saturating_sub(22)..];
    eprintln!(
        "schemathesis passed in {:?} on {backend:?}:\n{}\n{}",
        started.elapsed(),
        phases.copied().collect::<Vec<_>>().join("\n"),
        summary.join("\n")
    );
}
