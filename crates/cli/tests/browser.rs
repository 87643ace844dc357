//! The web page, end to end in headless Chromium: runs `e2e/run.sh` (Node's test runner
//! driving Debian's Chromium through playwright-core) against this build of the binary, so
//! `cargo test` covers the page as a person uses it. What the browser tests check is
//! described in `e2e/`.
//!
//! Needs Node.js and Chromium; `e2e/run.sh` installs Chromium and the npm packages when it
//! can (CI runs as root). Without Node.js the test is skipped with a visible message.

use std::path::Path;
use std::process::Command;

#[test]
fn web_page_works_end_to_end_in_chromium() {
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("SKIPPED: Node.js is not installed; the browser tests need it");
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
}
