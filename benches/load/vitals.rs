//! `--mode vitals`: sustained vitals ingest in one hospital, delivered to subscribers of
//! `patient:` topics.
//!
//! `--connections` subscribers (100 in the scenario) each subscribe to one patient's
//! topic (`patient:vp-{i % patients}`); `--concurrency` writers post readings back to back
//! (closed loop: the server's ceiling, not a target rate, is what is measured) for
//! `--duration` seconds, cycling over `--patients` patients with normal values (abnormal ones
//! would add the policy's alerts to the topics). With `--batch-size N > 1` each request is a
//! `POST vitals:batch` of N readings; with `--batch-size 1`, the single-reading path
//! `POST /patients/{p}/vitals`, for comparison.
//!
//! In the result, a "command" is a *reading*: `commands_ok` counts readings recorded and
//! `commands_per_sec` is readings per second; `command_latency` is per request (a batch).
//! Each subscriber must then hold every position of its patient's readings exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::report::{self, Percentiles, RunResult};
use crate::{cpu_pct, fresh, launch, new_context, process_ticks, summarize, Args, Fleet, Setup};
use crate::{Verdict, POLL};

/// The patient id of patient `n` of a run.
fn patient(n: usize) -> String {
    format!("vp-{n}")
}

/// A normal reading (nothing out of range: no alerts join the patient topics).
fn reading(patient: &str) -> serde_json::Value {
    serde_json::json!({"patient": patient, "heart_rate": 72, "systolic": 120,
        "diastolic": 80, "spo2": 98, "respiratory_rate": 16})
}

/// What the tool reads from a batch's 201.
#[derive(Deserialize)]
struct BatchAnswer {
    readings: Vec<BatchReading>,
}

#[derive(Deserialize)]
struct BatchReading {
    patient: String,
    position: i64,
}

/// What the tool reads from a single reading's 201.
#[derive(Deserialize)]
struct SingleAnswer {
    events: Vec<SingleEvent>,
}

#[derive(Deserialize)]
struct SingleEvent {
    position: i64,
}

/// What the writers recorded.
#[derive(Default)]
struct Written {
    /// Positions of each patient's readings.
    owed: HashMap<String, Vec<i64>>,
    readings: u64,
    requests_failed: u64,
    failures: std::collections::BTreeMap<String, u32>,
    latency: Option<hdrhistogram::Histogram<u64>>,
}

/// One writer: posts until `until`, request `k` built from `next` (a shared counter).
async fn write(
    args: &Args,
    http: reqwest::Client,
    base: String,
    tokens: Arc<Vec<String>>,
    next: Arc<std::sync::atomic::AtomicUsize>,
    until: Instant,
    written: Arc<Mutex<Written>>,
) {
    use std::sync::atomic::Ordering;
    let (size, patients) = (args.batch_size as usize, args.patients as usize);
    while Instant::now() < until {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let token = &tokens[k % tokens.len()];
        let started = Instant::now();
        let sent = if size == 1 {
            let p = patient(k % patients);
            http.post(format!("{base}/patients/{p}/vitals"))
                .bearer_auth(token)
                .json(&serde_json::json!({"heart_rate": 72, "spo2": 98}))
                .send()
                .await
                .map(|r| (r, Some(p)))
        } else {
            let readings: Vec<_> = (0..size)
                .map(|j| reading(&patient((k * size + j) % patients)))
                .collect();
            http.post(format!("{base}/vitals:batch"))
                .bearer_auth(token)
                .json(&serde_json::json!({ "readings": readings }))
                .send()
                .await
                .map(|r| (r, None))
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let answer = match sent {
            Ok((response, single)) if response.status() == reqwest::StatusCode::CREATED => {
                match single {
                    Some(p) => response.json::<SingleAnswer>().await.map(|a| {
                        a.events
                            .into_iter()
                            .map(|e| (p.clone(), e.position))
                            .collect()
                    }),
                    None => response.json::<BatchAnswer>().await.map(|a| {
                        a.readings
                            .into_iter()
                            .map(|r| (r.patient, r.position))
                            .collect::<Vec<_>>()
                    }),
                }
                .map_err(|_| "body".to_owned())
            }
            Ok((response, _)) => Err(format!("http {}", response.status().as_u16())),
            Err(e) if e.is_timeout() => Err("timeout".to_owned()),
            Err(_) => Err("transport".to_owned()),
        };
        let mut w = written.lock().await;
        match answer {
            Ok(positions) => {
                w.readings += positions.len() as u64;
                for (p, position) in positions {
                    w.owed.entry(p).or_default().push(position);
                }
                report::record(w.latency.get_or_insert_with(report::histogram), micros);
            }
            Err(reason) => {
                w.requests_failed += 1;
                *w.failures.entry(reason).or_default() += 1;
            }
        }
    }
}

/// Waits until client `i` holds its last owed position (`targets[i]`) or ended.
async fn drain(fleet: &Fleet, targets: &[i64], timeout: Duration) -> bool {
    use std::sync::atomic::Ordering;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let behind = fleet
            .handles
            .iter()
            .zip(&fleet.ctx.progress)
            .zip(targets)
            .filter(|((h, p), t)| !h.is_finished() && p.load(Ordering::Relaxed) < **t)
            .count();
        if behind == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(behind, "subscribers still behind at the deadline");
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Each client must hold its patient's positions exactly once, and nothing else.
fn verify(outcomes: &[crate::client::Outcome], owed_of: &[&[i64]]) -> Verdict {
    let mut v = Verdict::default();
    for (outcome, owed) in outcomes.iter().zip(owed_of) {
        let Some(ledger) = outcome.ledger.as_ref() else {
            continue;
        };
        v.clients += 1;
        v.deliveries += ledger.deliveries;
        v.last_delivery_us = v.last_delivery_us.max(ledger.last_delivery_us);
        let (mut lost, mut duplicated, mut owed_received) = (0u64, 0u64, 0u64);
        for &p in owed.iter().filter(|p| **p > ledger.base) {
            let copies = u64::from(ledger.count(p));
            owed_received += copies;
            match copies {
                0 => lost += 1,
                1 => {}
                n => duplicated += n - 1,
            }
        }
        let received: u64 = ledger.counts.iter().map(|c| u64::from(*c)).sum();
        let unexpected = ledger.unexpected + received.saturating_sub(owed_received);
        if lost + duplicated + unexpected > 0 {
            v.clients_with_errors += 1;
        }
        v.lost += lost;
        v.duplicated += duplicated;
        v.unexpected += unexpected;
    }
    v
}

/// Vitals mode (see the module documentation).
pub async fn run(args: &Args, setup: Setup) -> anyhow::Result<RunResult> {
    let patients = args.patients as usize;
    let topics: Vec<String> = (0..patients)
        .map(|n| format!("patient:{}", patient(n)))
        .collect();
    let t0 = Instant::now();
    let mut ctx = new_context(args, &setup, t0);
    ctx.reconnect = true;
    ctx.topics = topics;
    let fleet = launch(
        Arc::new(ctx),
        fresh(args.connections),
        args.connect_rate.0,
        args.connect_concurrency,
    )
    .await;
    let connects_per_sec = fleet.connect_rate();

    let duration = Duration::from_secs(args.duration);
    tracing::info!(
        batch = args.batch_size,
        writers = args.concurrency,
        seconds = args.duration,
        "writing readings"
    );
    let http = reqwest::Client::builder()
        .timeout(crate::api::REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    let base = format!(
        "{}/api/hospitals/{}",
        args.url.trim_end_matches('/'),
        args.hospital
    );
    // Nurses may record vitals; the subscribers' users are nurses.
    let tokens = Arc::new(setup.tokens.subscribers.clone());
    let written = Arc::new(Mutex::new(Written::default()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writing_started_us = fleet.ctx.micros_since_t0(Instant::now());
    let (ticks_before, cpu_from) = (process_ticks(), Instant::now());
    let until = Instant::now() + duration;
    let writers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            write(
                args,
                http.clone(),
                base.clone(),
                tokens.clone(),
                next.clone(),
                until,
                written.clone(),
            )
        })
        .collect();
    futures_util::future::join_all(writers).await;
    let elapsed = cpu_from.elapsed();
    let (server_cpu, postgres_cpu) = cpu_pct(args, &ticks_before, &process_ticks(), elapsed);
    let written = std::mem::take(&mut *written.lock().await);
    tracing::info!(
        readings = written.readings,
        per_sec = written.readings as f64 / elapsed.as_secs_f64(),
        failed = written.requests_failed,
        "writing done"
    );

    let empty: Vec<i64> = Vec::new();
    let owed_of: Vec<&[i64]> = (0..args.connections as usize)
        .map(|i| {
            written
                .owed
                .get(&patient(i % patients))
                .map_or(empty.as_slice(), Vec::as_slice)
        })
        .collect();
    let targets: Vec<i64> = owed_of
        .iter()
        .map(|o| o.iter().copied().max().unwrap_or(0))
        .collect();
    let drained = drain(&fleet, &targets, Duration::from_secs(args.drain_timeout)).await;
    tracing::info!(drained, "drain");
    let ctx = fleet.ctx.clone();
    let outcomes = fleet.stop().await;
    let verdict = verify(&outcomes, &owed_of);
    let mut result = setup.result;
    summarize(&mut result, &ctx, &outcomes, &verdict);
    result.server_cpu_pct = server_cpu;
    result.postgres_cpu_pct = postgres_cpu;
    result.connects_per_sec = connects_per_sec;
    result.duration_s = Some(elapsed.as_secs_f64());
    result.commands_ok = written.readings;
    result.commands_failed = written.requests_failed * u64::from(args.batch_size);
    result.commands_per_sec = Some(written.readings as f64 / elapsed.as_secs_f64().max(1e-3));
    result.command_latency = written.latency.as_ref().and_then(Percentiles::of);
    result.command_failures = report::top_counts(&written.failures, 5);
    let span_us = verdict.last_delivery_us.saturating_sub(writing_started_us);
    if span_us > 0 {
        result.deliveries_per_sec = Some(verdict.deliveries as f64 / (span_us as f64 / 1e6));
    }
    Ok(result)
}
