//! The web page, end to end in headless Chromium: runs `e2e/run.sh` (Node's test runner
//! driving Debian's Chromium through playwright-core) against this build of the binary, so
//! `cargo test` covers the page as a person uses it. What the browser tests check is
//! described in `e2e/`.
//!
//! Needs Node.js and Chromium; `e2e/run.sh` installs Chromium and the npm packages when it
//! can (CI runs as root). Outside CI, a missing Node.js or Chromium skips the test with a
//! visible message; with `CI` set it fails the test, as does any browser test the runner
//! skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Chromium `e2e/run.sh` drives: `$CHROMIUM_PATH`, else Debian's `/usr/bin/chromium`.
fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM_PATH")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Whether this is a CI run (`CI` set, non-empty and not `0` or `false`).
fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Why the browser tests cannot run here (`None` when they can), given whether Node.js and
/// Chromium were found and whether this is CI. In CI `e2e/run.sh` installs a missing
/// Chromium itself (and fails when it cannot), so only a missing Node.js stops it there;
/// the caller fails the test rather than skip it in CI.
fn missing(node: bool, chromium: bool, ci: bool) -> Option<&'static str> {
    if !node {
        Some("Node.js is not installed; the browser tests need it")
    } else if !chromium && !ci {
        Some("Chromium is not installed (apt-get install chromium, or set CHROMIUM_PATH)")
    } else {
        None
    }
}

#[test]
fn a_missing_tool_skips_outside_ci_only() {
    assert!(missing(true, true, false).is_none());
    assert!(missing(true, true, true).is_none());
    assert!(missing(false, true, false).is_some_and(|m| m.contains("Node.js")));
    assert!(missing(false, true, true).is_some());
    assert!(missing(true, false, false).is_some_and(|m| m.contains("Chromium")));
    assert!(missing(true, false, true).is_none(), "CI installs Chromium");
}

#[test]
fn web_page_works_end_to_end_in_chromium() {
    let ci = in_ci();
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if let Some(why) = missing(node, chromium().is_file(), ci) {
        assert!(!ci, "CI: {why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(root.join("e2e/run.sh"))
        .env("SUPERRES_BIN", env!("CARGO_BIN_EXE_superres"))
        .env("E2E_SKIP_BUILD", "1")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(out.status.success(), "browser tests failed (output above)");
    assert!(
        stdout.contains("# fail 0"),
        "the browser test runner reported failures"
    );
    if ci {
        assert!(
            stdout.contains("# skipped 0") && !stdout.contains("SKIPPED"),
            "CI: the browser test runner skipped tests (output above)"
        );
    }
}
