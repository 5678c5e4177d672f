//! The wasmtime `Engine` shared by every component, and the on-disk cache of compiled components.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Engine-wide limits. The pool is sized for the runner's concurrency cap plus the extra
/// instances that service chaining creates while a request is in flight.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Component instances the pooling allocator keeps slots for.
    pub pooled_instances: u32,
    /// Per-instance linear memory cap in bytes (`max_instance_memory`).
    pub max_instance_memory: Option<u64>,
    /// Use the pooling allocator (Spin's default); off only for constrained environments.
    pub pooling: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            pooled_instances: 1000,
            max_instance_memory: None,
            pooling: true,
        }
    }
}

pub fn build_engine(options: &EngineOptions) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    // Epoch interruption lets a future request deadline stop a runaway guest without fuel's
    // per-instruction cost; the ticker is started by the runner.
    config.epoch_interruption(true);
    if options.pooling {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(options.pooled_instances);
        // spin-sdk guests built for wasm32-wasip2 have one core module with one memory and one
        // table; leave headroom for components composed from several modules.
        pool.total_core_instances(options.pooled_instances * 4);
        pool.total_memories(options.pooled_instances * 2);
        pool.total_tables(options.pooled_instances * 2);
        if let Some(max) = options.max_instance_memory {
            pool.max_memory_size(usize::try_from(max).unwrap_or(usize::MAX));
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("creating the wasmtime engine")
}

/// Where compiled components are cached: `$BAZAAR_CACHE_DIR`, else `$XDG_CACHE_HOME/bazaar`,
/// else `~/.cache/bazaar`. Shared by every app and state dir so restarts and test runs reuse it.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("BAZAAR_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("bazaar"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("bazaar"))
}

/// Loads a component, reusing a previous compilation when the same bytes were compiled by a
/// compatible engine before (keyed by the wasm's SHA-256 and the engine's compatibility hash).
pub fn load_component(
    engine: &Engine,
    wasm: &Path,
    cache_dir: Option<&Path>,
) -> anyhow::Result<Component> {
    let bytes =
        std::fs::read(wasm).with_context(|| format!("reading component {}", wasm.display()))?;
    let Some(cache_dir) = cache_dir else {
        return Component::new(engine, &bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling {}", wasm.display()));
    };
    let mut hasher = Sha256::new();
    hasher.update(&bytes);
    std::hash::Hash::hash(
        &engine.precompile_compatibility_hash(),
        &mut HashWriter(&mut hasher),
    );
    let key = hex::encode(hasher.finalize());
    let cached = cache_dir.join(format!("{key}.cwasm"));
    if cached.exists() {
        // SAFETY: the file was written by `Component::serialize` of an engine with the same
        // compatibility hash (part of the file name), into a cache directory only we write.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(component) => {
                tracing::info!(wasm = %wasm.display(), cache = %cached.display(), "loaded compiled component from cache");
                return Ok(component);
            }
            Err(err) => {
                tracing::warn!(path = %cached.display(), error = %err, "ignoring unusable compiled-component cache entry")
            }
        }
    }
    let started = std::time::Instant::now();
    let component = Component::new(engine, &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("compiling {}", wasm.display()))?;
    tracing::info!(wasm = %wasm.display(), duration_ms = started.elapsed().as_millis() as u64, "compiled component");
    if let Err(err) = write_cache_entry(&component, cache_dir, &cached) {
        tracing::warn!(path = %cached.display(), error = %err, "could not cache compiled component");
    }
    Ok(component)
}

fn write_cache_entry(component: &Component, dir: &Path, path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("component");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, component.serialize()?)?;
    // Rename is atomic: a concurrent reader sees either no file or a complete one.
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Feeds `Hash` output into a SHA-256 so the engine's compatibility hash becomes part of the key.
struct HashWriter<'a>(&'a mut Sha256);

impl std::hash::Hasher for HashWriter<'_> {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
