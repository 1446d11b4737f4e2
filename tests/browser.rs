//! The dashboard in a real headless Chromium (Debian's `chromium`), driven by `playwright-core`
//! (tests/browser/dashboard.mjs). Needs node, `npm ci --prefix tests/browser` and chromium, so
//! plain `cargo test` lists it as ignored; `bash tests/all.sh` installs them and runs it, and a
//! missing one fails the test by name.

use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "needs chromium, node and playwright-core: run bash tests/all.sh"]
fn dashboard_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut missing = Vec::new();
    if !Path::new(&chromium).exists() {
        missing.push("chromium (apt install chromium)");
    }
    if !root
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        missing.push("playwright-core (npm ci --prefix tests/browser)");
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node");
    }
    assert!(
        missing.is_empty(),
        "the browser test needs {} (bash tests/all.sh installs them as root)",
        missing.join(", ")
    );
    let artifacts = root.join("target/browser-artifacts");
    // A week of history with a gap and events, restored by a daemon started with --state-dir:
    // what the range picker's test draws.
    let demo = root.join("target/browser-demo-state");
    let _ = std::fs::remove_dir_all(&demo);
    std::fs::create_dir_all(&demo).expect("create the demo state dir");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    std::fs::write(
        demo.join("history.snap"),
        edgemon::synthetic_demo(host.trim(), edgemon::protocol::unix_ms()),
    )
    .expect("write the demo snapshot");
    let out = Command::new("timeout")
        .args(["600", "node"])
        .arg(root.join("tests/browser/dashboard.mjs"))
        .env("EDGEMON_BIN", env!("CARGO_BIN_EXE_edgemon"))
        .env("EDGEMON_ARTIFACTS", &artifacts)
        .env("EDGEMON_DEMO_STATE", &demo)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("{report}");
    assert!(out.status.success(), "browser tests failed:\n{report}");
    for shot in [
        "dashboard-375-light.png",
        "dashboard-1280-light.png",
        "dashboard-1920-light.png",
        "dashboard-375-dark.png",
        "dashboard-1280-dark.png",
        "dashboard-1920-dark.png",
    ] {
        assert!(artifacts.join(shot).exists(), "no screenshot {shot}");
    }
}
