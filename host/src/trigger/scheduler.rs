//! Bazaar's job scheduler (ARCHITECTURE principle 8: no daemons inside components). Periodic
//! work is an idempotent HTTP job route; locally the runner calls it on a schedule declared in
//! the manifest, in a cluster a Kubernetes CronJob calls the same route. Spin ignores `tool`
//! tables, so the manifest stays portable.
//!
//! ```toml
//! [[application.tool.bazaar.jobs]]      # routed like an inbound request
//! route = "/internal/jobs/outbox-sweep"
//! every = "30s"
//!
//! [[component.orders.tool.bazaar.jobs]] # sent straight to the component (private ones too)
//! name = "saga-recovery"
//! route = "/jobs/saga-recovery"
//! every = "1m"
//! ```
//! Each job runs at most once at a time: a run that outlasts its period delays the next tick
//! instead of overlapping it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bazaar_manifest::Manifest;
use serde::Deserialize;

use super::http::HttpTrigger;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobSpec {
    name: Option<String>,
    route: String,
    every: String,
    #[serde(default = "default_method")]
    method: String,
}

fn default_method() -> String {
    "POST".into()
}

/// A validated job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub name: String,
    /// `Some(id)`: call that component directly; `None`: route like an inbound request.
    pub component: Option<String>,
    pub route: String,
    pub every: Duration,
    pub method: http::Method,
}

fn parse_jobs(
    table: &toml::Table,
    component: Option<&str>,
    where_: &str,
) -> anyhow::Result<Vec<Job>> {
    let Some(value) = table.get("jobs") else {
        return Ok(Vec::new());
    };
    let specs: Vec<JobSpec> = value
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{where_}.jobs: {}", e.message()))?;
    specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            if !spec.route.starts_with('/') {
                bail!(
                    "{where_}.jobs #{}: route `{}` must start with `/`",
                    i + 1,
                    spec.route
                );
            }
            let every = humantime::parse_duration(&spec.every)
                .with_context(|| format!("{where_}.jobs #{}: every = `{}`", i + 1, spec.every))?;
            if every < Duration::from_millis(100) {
                bail!(
                    "{where_}.jobs #{}: every = `{}` is shorter than 100ms",
                    i + 1,
                    spec.every
                );
            }
            let method = http::Method::from_bytes(spec.method.to_ascii_uppercase().as_bytes())
                .with_context(|| {
                    format!("{where_}.jobs #{}: invalid method `{}`", i + 1, spec.method)
                })?;
            let name = spec.name.unwrap_or_else(|| match component {
                Some(id) => format!("{id}{}", spec.route),
                None => spec.route.clone(),
            });
            Ok(Job {
                name,
                component: component.map(str::to_owned),
                route: spec.route,
                every,
                method,
            })
        })
        .collect()
}

/// Every job the manifest declares, application-level first.
pub fn jobs_from_manifest(manifest: &Manifest) -> anyhow::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    if let Some(table) = manifest.application.tool.get("bazaar") {
        jobs.extend(parse_jobs(table, None, "[application.tool.bazaar]")?);
    }
    for (id, component) in &manifest.components {
        if let Some(table) = component.tool.get("bazaar") {
            jobs.extend(parse_jobs(
                table,
                Some(id),
                &format!("[component.{id}.tool.bazaar]"),
            )?);
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for job in &jobs {
        if !names.insert(job.name.as_str()) {
            bail!(
                "two jobs are named `{}`; give them distinct `name`s",
                job.name
            );
        }
    }
    Ok(jobs)
}

/// Starts one task per job; they stop when the returned handles are aborted.
pub fn start(trigger: Arc<HttpTrigger>, jobs: Vec<Job>) -> Vec<tokio::task::JoinHandle<()>> {
    jobs.into_iter()
        .map(|job| {
            let trigger = trigger.clone();
            tokio::spawn(async move {
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + job.every, job.every);
                // A run longer than the period must not cause a burst of catch-up runs.
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    run_once(&trigger, &job).await;
                }
            })
        })
        .collect()
}

/// One run of a job; awaited to completion before the next tick, so runs never overlap.
pub async fn run_once(trigger: &HttpTrigger, job: &Job) -> u16 {
    let started = Instant::now();
    let response = trigger
        .invoke_in_process(job.component.as_deref(), job.method.clone(), &job.route)
        .await;
    let status = response.status();
    // Drain the body so the instance completes before the next run starts.
    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    if status.is_success() {
        // Debug: a shop runs several jobs every few seconds; only failures belong in the log.
        tracing::debug!(job = %job.name, status = status.as_u16(), duration_ms, "job run");
    } else {
        tracing::warn!(job = %job.name, status = status.as_u16(), duration_ms, "job run failed");
    }
    status.as_u16()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn parses_application_and_component_jobs() {
        let jobs = parse_jobs(
            &table("[[jobs]]\nroute = \"/jobs/sweep\"\nevery = \"30s\"\n"),
            None,
            "app",
        )
        .unwrap();
        assert_eq!(
            jobs,
            vec![Job {
                name: "/jobs/sweep".into(),
                component: None,
                route: "/jobs/sweep".into(),
                every: Duration::from_secs(30),
                method: http::Method::POST
            }]
        );
        let jobs = parse_jobs(
            &table(
                "[[jobs]]\nname = \"recover\"\nroute = \"/r\"\nevery = \"1m\"\nmethod = \"get\"\n",
            ),
            Some("orders"),
            "c",
        )
        .unwrap();
        assert_eq!(jobs[0].name, "recover");
        assert_eq!(jobs[0].component.as_deref(), Some("orders"));
        assert_eq!(jobs[0].every, Duration::from_secs(60));
        assert_eq!(jobs[0].method, http::Method::GET);
    }

    #[test]
    fn rejects_bad_jobs_with_a_clear_error() {
        for (text, needle) in [
            (
                "[[jobs]]\nroute = \"jobs\"\nevery = \"1s\"\n",
                "must start with",
            ),
            ("[[jobs]]\nroute = \"/j\"\nevery = \"soon\"\n", "every"),
            (
                "[[jobs]]\nroute = \"/j\"\nevery = \"1ms\"\n",
                "shorter than",
            ),
            (
                "[[jobs]]\nroute = \"/j\"\nevery = \"1s\"\ncron = \"* * *\"\n",
                "cron",
            ),
            ("[[jobs]]\nevery = \"1s\"\n", "route"),
        ] {
            let err = parse_jobs(&table(text), None, "app").unwrap_err();
            assert!(format!("{err:#}").contains(needle), "{text}: {err:#}");
        }
    }

    #[test]
    fn no_jobs_key_means_no_jobs() {
        assert!(
            parse_jobs(&table("embedded_redis_fallback = true\n"), None, "app")
                .unwrap()
                .is_empty()
        );
    }
}
