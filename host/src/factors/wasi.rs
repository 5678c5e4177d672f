//! WASI for guests: environment, file mounts, and stdio. A component's stdout/stderr go to the
//! runner's stderr prefixed with the component id and are appended to
//! `<log_dir>/<id>_stdout.txt` / `<id>_stderr.txt`, as `spin up` does.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use bazaar_manifest::FileMount;

#[derive(Clone, Copy, Debug)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// One component's output stream, shared by all its instances: the log file handle is opened
/// once at startup and appended to by every instance.
#[derive(Clone)]
pub struct ComponentOutput {
    component_id: Arc<str>,
    file: Option<Arc<Mutex<File>>>,
    echo: bool,
}

impl ComponentOutput {
    /// `log_dir = None` disables the log file (output is still echoed to the runner's stderr).
    pub fn new(
        component_id: &str,
        kind: StreamKind,
        log_dir: Option<&Path>,
        echo: bool,
    ) -> anyhow::Result<Self> {
        let file = match log_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let suffix = match kind {
                    StreamKind::Stdout => "stdout",
                    StreamKind::Stderr => "stderr",
                };
                let path = dir.join(format!("{component_id}_{suffix}.txt"));
                let file = OpenOptions::new().create(true).append(true).open(&path)?;
                Some(Arc::new(Mutex::new(file)))
            }
            None => None,
        };
        Ok(Self {
            component_id: component_id.into(),
            file,
            echo,
        })
    }
}

impl IsTerminal for ComponentOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for ComponentOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(OutputWriter {
            output: self.clone(),
            pending: Vec::new(),
        })
    }
}

/// Longest partial line held back waiting for its newline before it is echoed as is.
const MAX_PENDING_LINE: usize = 64 * 1024;

/// Line-buffers guest output so the component-id prefix lands at the start of each line even
/// when the guest writes a line in several pieces.
struct OutputWriter {
    output: ComponentOutput,
    pending: Vec<u8>,
}

impl OutputWriter {
    fn emit_lines(&mut self, flush_partial: bool) {
        if !self.output.echo {
            self.pending.clear();
            return;
        }
        let mut stderr = std::io::stderr().lock();
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            let _ = write!(stderr, "[{}] ", self.output.component_id);
            let _ = stderr.write_all(&line);
        }
        if flush_partial && !self.pending.is_empty() {
            let _ = write!(stderr, "[{}] ", self.output.component_id);
            let _ = stderr.write_all(&self.pending);
            let _ = stderr.write_all(b"\n");
            self.pending.clear();
        }
    }
}

impl AsyncWrite for OutputWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(file) = &self.output.file {
            // Small appends to a local file: cheaper than a round trip to a blocking thread.
            let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            file.write_all(buf)?;
        }
        self.pending.extend_from_slice(buf);
        // A guest writing without newlines must not grow host memory without bound.
        let overlong = self.pending.len() > MAX_PENDING_LINE;
        self.emit_lines(overlong);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.emit_lines(true);
        Poll::Ready(Ok(()))
    }
}

impl Drop for OutputWriter {
    fn drop(&mut self) {
        self.emit_lines(true);
    }
}

/// Everything needed to build a component's `WasiCtx` for each new instance.
#[derive(Clone)]
pub struct WasiTemplate {
    pub env: Vec<(String, String)>,
    /// Read-only directory preopened at `/` holding the component's `files`, if it has any.
    pub mount_root: Option<std::path::PathBuf>,
    pub stdout: ComponentOutput,
    pub stderr: ComponentOutput,
}

impl WasiTemplate {
    pub fn build(&self) -> anyhow::Result<WasiCtx> {
        let mut builder = WasiCtxBuilder::new();
        builder.envs(&self.env);
        builder.stdout(self.stdout.clone());
        builder.stderr(self.stderr.clone());
        // Network access goes only through wasi:http and Spin's interfaces, which enforce
        // `allowed_outbound_hosts`; raw sockets stay denied (WasiCtxBuilder's default).
        if let Some(root) = &self.mount_root {
            builder.preopened_dir(root, "/", FsPerms::ReadOnly)?;
        }
        Ok(builder.build())
    }
}

/// Copies a component's `files` into `staging` at their guest paths, so exactly the declared
/// files (and nothing beside them on the host) are visible, as Spin does for local apps.
pub fn stage_files(
    files: &[FileMount],
    staging: &Path,
) -> anyhow::Result<Option<std::path::PathBuf>> {
    use anyhow::Context as _;
    if files.is_empty() {
        return Ok(None);
    }
    if staging.exists() {
        std::fs::remove_dir_all(staging)
            .with_context(|| format!("clearing {}", staging.display()))?;
    }
    std::fs::create_dir_all(staging)?;
    for mount in files {
        let relative = Path::new(mount.destination.trim_start_matches('/'));
        if relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            anyhow::bail!(
                "files: destination `{}` must be an absolute path without `..`",
                mount.destination
            );
        }
        let dest = staging.join(relative);
        copy_recursively(&mount.source, &dest).with_context(|| {
            format!(
                "mounting {} at {}",
                mount.source.display(),
                mount.destination
            )
        })?;
    }
    Ok(Some(staging.to_path_buf()))
}

fn copy_recursively(src: &Path, dest: &Path) -> std::io::Result<()> {
    // Symlinks are not followed: one pointing outside the mounted tree would expose host files
    // the manifest never listed (and a loop would never end).
    if std::fs::symlink_metadata(src)?.file_type().is_symlink() {
        tracing::warn!(path = %src.display(), "files: skipping symlink");
        return Ok(());
    }
    if src.is_dir() {
        std::fs::create_dir_all(dest)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_recursively(&entry.path(), &dest.join(entry.file_name()))?;
        }
    } else {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(src, dest)?;
    }
    Ok(())
}
