//! What the payment tests need from the shared harness (`common`): building components for
//! wasm32-wasip2, the workspace root and an HTTP client, plus the payment core's manifest for a
//! test. The payment tests start `bazaar payments serve` themselves rather than `bazaar up`, so
//! they use only these.
#![allow(dead_code)]

/// The shared harness, for payment tests that run the shop too (`payments_shop`).
#[path = "../common/mod.rs"]
pub mod common;

use std::path::{Path, PathBuf};

// Not every payment test uses both.
#[allow(unused_imports)]
pub use common::{build_wasm, workspace_root};

/// A client with a longer timeout than `common::client`: the hostile-plugin tests wait for a
/// plugin's CPU budget to run out.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The repository's `payments/spin.toml`, its source pointed at a fresh test build of
/// `payment-core`, written as `<dir>/spin.toml` (so the core's state dir is `<dir>/.spin`).
/// Returns the manifest's path.
pub fn core_manifest(dir: &Path) -> PathBuf {
    let core = build_wasm("payment-core");
    let text = std::fs::read_to_string(workspace_root().join("payments/spin.toml")).unwrap();
    const SOURCE: &str = "../target/wasm32-wasip2/release/payment_core.wasm";
    assert!(text.contains(SOURCE), "payments/spin.toml names {SOURCE}");
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("spin.toml");
    std::fs::write(&path, text.replace(SOURCE, &core.display().to_string())).unwrap();
    path
}

/// The text of every `.txt` / `.log` file under `dir` (component log files), for card-data greps.
pub fn log_files(dir: &Path) -> String {
    let mut text = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "txt" || e == "log") {
                text.push_str(&String::from_utf8_lossy(
                    &std::fs::read(&path).unwrap_or_default(),
                ));
                text.push('\n');
            }
        }
    }
    text
}
