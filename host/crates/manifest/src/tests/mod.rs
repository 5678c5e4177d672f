//! Crate tests. Each test builds its own scratch directory, so they run in parallel and never
//! depend on (or change) the process's environment or current directory.

mod manifest_tests;
mod runtime_config_tests;
mod variables_tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A scratch directory removed on drop.
pub(crate) struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bazaar-manifest-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Asserts the error is a single line and contains every fragment.
#[track_caller]
pub(crate) fn assert_err(r: anyhow::Result<impl std::fmt::Debug>, fragments: &[&str]) -> String {
    let e = format!("{:#}", r.expect_err("expected an error"));
    assert!(!e.contains('\n'), "error is not one line: {e}");
    for f in fragments {
        assert!(e.contains(f), "error `{e}` does not contain `{f}`");
    }
    e
}
