//! The API contract, attacked: `schemathesis` (PyPI) generates requests from the served
//! `/openapi.json` (valid ones, invalid ones, and sequences that follow a job) against a
//! live server, and checks every response against the description (every check but
//! `use_after_free`, see the command below): its status is one the
//! operation lists, its body and headers match the schemas, no 5xx, schema-invalid input
//! is refused and valid input accepted (within `schemathesis.toml`'s statuses).
//!
//! The server runs in this process with two tiny models and an admin token, so the admin
//! endpoint is exercised too. The run is seeded, so a failure reproduces; its report names
//! each failing request as a `curl` command.
//!
//! Needs `python3 -m pip install schemathesis`. Outside CI a missing schemathesis skips the
//! test with a visible message; with `CI` set it fails it.

mod common;

use std::process::Command;

use common::*;
use superres_import::Family;

/// Whether this is a CI run (`CI` set, non-empty and not `0` or `false`).
fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn has_schemathesis() -> bool {
    Command::new(python())
        .args(["-c", "import schemathesis"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_matches_the_openapi_description() {
    if !has_schemathesis() {
        let why = "schemathesis is not installed (python3 -m pip install schemathesis)";
        assert!(!in_ci(), "CI: {why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    let server = start_with_models(
        admin_settings(),
        vec![
            tiny_model("default", 2, Family::Rgb),
            tiny_model("gray", 3, Family::YChannel),
        ],
    )
    .await;
    let schema = server.url("/openapi.json");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let work = temp_dir("contract");
    let run = {
        let work = work.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(python())
                .current_dir(&work)
                .args([
                    "-m",
                    "schemathesis.cli",
                    "--no-color",
                    "--config-file",
                    config,
                ])
                .args(["run", &schema])
                .args([
                    "--checks",
                    "all",
                    "--max-examples",
                    "40",
                    "--seed",
                    "20261202",
                ])
                // `DELETE /v1/jobs/{id}` cancels a job rather than deleting a record: a
                // queued or running job stays readable as `cancelled` (so a client
                // following its events sees how it ended) until its TTL, a finished one
                // is forgotten at once. Which one a generated sequence meets depends on
                // timing, so this check (every DELETE makes the resource vanish) would
                // pass or fail by chance. Cancellation is tested in tests/api.rs.
                .args(["--exclude-checks", "use_after_free"])
                .args(["--generation-database", "none", "--workers", "2"])
                .args(["--max-failures", "20"])
                .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
                .output()
        })
    };
    let out = run
        .await
        .expect("the schemathesis thread")
        .expect("schemathesis starts");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Vec<&str> = report.lines().rev().take(24).collect();
    eprintln!(
        "{}",
        summary.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}"
    );
    assert!(
        report.contains("Tested: 12"),
        "every described operation was tested:\n{report}"
    );
    assert_eq!(server.stop().await.abandoned, 0);
    let _ = std::fs::remove_dir_all(work);
}
