//! What a run measured, and how it is shown: one [`RunResult`] per run, printed as a
//! markdown table row and appended as a JSON line to the `--json-out` file; `--summarize`
//! turns a file of such lines back into one table.

use std::fmt::Write as _;
use std::io::{BufRead, Write as _};
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency a histogram records, in microseconds (10 minutes: longer than any run).
/// Larger values are clamped to it, so a pathological sample still counts.
const MAX_MICROS: u64 = 600_000_000;

/// A latency histogram in microseconds with three significant digits.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low ≥ 1, high ≥ 2 × low).
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant histogram bounds are valid")
}

/// Records `micros` (at least 1 µs, at most [`MAX_MICROS`]).
pub fn record(h: &mut Histogram<u64>, micros: u64) {
    h.saturating_record(micros.clamp(1, MAX_MICROS));
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples recorded.
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// The percentiles of `h`, or `None` when it holds no sample.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Some(Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        })
    }

    fn cell(p: &Option<Self>) -> String {
        match p {
            None => "–".to_owned(),
            Some(p) => format!(
                "{} / {} / {} / {}",
                short(p.p50_ms),
                short(p.p99_ms),
                short(p.p999_ms),
                short(p.max_ms)
            ),
        }
    }
}

/// A number with precision suited to its size (latencies span 0.1 ms to seconds).
fn short(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// Everything one run measured. Fields that a mode does not measure are `None`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunResult {
    /// `--label`, or the mode and sizes.
    pub label: String,
    /// `steady`, `connect`, `idle` or `reconnect`.
    pub mode: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// Hospital the run used.
    pub hospital: String,
    /// Connections asked for.
    pub connections: u32,
    /// Connections that authenticated (and subscribed, in the modes that subscribe).
    pub connected: u32,
    /// Connections that failed to open, by reason.
    pub connect_failures: u32,
    /// The most frequent failure reasons with their counts, e.g. `timeout×12`.
    pub failure_reasons: Vec<String>,
    /// Connections accepted per second (connect mode, and the ramp of the others).
    pub connects_per_sec: Option<f64>,
    /// Time from TCP connect to `authenticated` (connect mode) or `subscribed`.
    pub handshake: Option<Percentiles>,
    /// Target command rate.
    pub target_rate: Option<f64>,
    /// Seconds commands were sent for (steady) or connections held (idle).
    pub duration_s: Option<f64>,
    /// Commands scheduled by the open-loop writer.
    pub commands_scheduled: u64,
    /// Commands answered 201.
    pub commands_ok: u64,
    /// Commands answered otherwise or not at all.
    pub commands_failed: u64,
    /// Commands never sent because the in-flight cap was reached (the server fell behind).
    pub commands_skipped: u64,
    /// Failed commands by reason, e.g. `http 429×3`, `timeout×2`.
    #[serde(default)]
    pub command_failures: Vec<String>,
    /// Commands per second answered 201, over the writing window.
    pub commands_per_sec: Option<f64>,
    /// Scheduled send → 201 response.
    pub command_latency: Option<Percentiles>,
    /// Events delivered to all subscribers.
    pub deliveries: u64,
    /// Mean payload bytes of a delivered `event` frame (its JSON).
    #[serde(default)]
    pub event_frame_bytes: Option<f64>,
    /// Deliveries per second, from the first scheduled command to the last delivery.
    pub deliveries_per_sec: Option<f64>,
    /// Event commit time (`ts`, the server's clock) → received.
    pub commit_to_delivery: Option<Percentiles>,
    /// Command's scheduled send instant → event received (open loop: includes any queueing
    /// in front of the server).
    pub send_to_delivery: Option<Percentiles>,
    /// Subscribers whose deliveries were checked against the stream.
    pub clients_verified: u32,
    /// Owed events never received, summed over subscribers.
    pub lost: u64,
    /// Extra copies of events received, summed over subscribers.
    pub duplicated: u64,
    /// Events received that were not owed (at or before the subscribe position, past the
    /// head, or not alerts).
    pub unexpected: u64,
    /// Subscribers with at least one lost or duplicated event.
    pub clients_with_errors: u32,
    /// Times subscribers were disconnected by the server and resumed.
    pub reconnects: u32,
    /// Resumes answered `recovered: false`.
    pub unrecovered: u32,
    /// Server close codes seen, e.g. `4008 slow_consumer×3`.
    pub server_closes: Vec<String>,
    /// Server VmRSS before connecting, KiB.
    pub rss_before_kib: Option<u64>,
    /// Server VmRSS with every connection up, KiB.
    pub rss_after_kib: Option<u64>,
    /// (after − before) / connected, KiB.
    pub rss_per_connection_kib: Option<f64>,
    /// CPU of the server process while commands were written (steady mode), % of one core.
    pub server_cpu_pct: Option<f64>,
    /// CPU of its PostgreSQL (postmaster and backends) over the same window, % of one core.
    pub postgres_cpu_pct: Option<f64>,
    /// Events each reconnecting client was owed.
    pub owed: Option<u32>,
    /// Reconnect start → the last client holding everything it was owed, seconds.
    pub resume_all_s: Option<f64>,
    /// Reconnect start → each client holding everything it was owed.
    pub resume: Option<Percentiles>,
    /// True when nothing was lost, duplicated or unexpected.
    pub ok: bool,
}

const HEADER: &str = "| run | mode | conns | failed | conn/s | cmd/s target | cmds ok / failed / skipped | cmd/s done | deliveries/s | commit→recv ms p50 / p99 / p99.9 / max | send→recv ms p50 / p99 / p99.9 / max | lost | dup | RSS KiB/conn | resume all s | ok |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---|\n";

fn opt(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "–".to_owned(), |x| format!("{x:.decimals$}"))
}

impl RunResult {
    fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            self.label,
            self.mode,
            self.connected,
            self.connect_failures,
            opt(self.connects_per_sec, 0),
            opt(self.target_rate, 0),
            self.commands_ok,
            self.commands_failed,
            self.commands_skipped,
            opt(self.commands_per_sec, 0),
            opt(self.deliveries_per_sec, 0),
            Percentiles::cell(&self.commit_to_delivery),
            Percentiles::cell(&self.send_to_delivery),
            self.lost,
            self.duplicated + self.unexpected,
            opt(self.rss_per_connection_kib, 1),
            opt(self.resume_all_s, 2),
            if self.ok { "yes" } else { "**NO**" },
        )
    }

    /// The details that do not fit the table: failure reasons, close codes, handshake,
    /// command and resume latencies.
    fn notes(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, value: String| {
            let _ = writeln!(out, "- {}: {name}: {value}", self.label);
        };
        if !self.failure_reasons.is_empty() {
            line("connect failures", self.failure_reasons.join(", "));
        }
        if !self.command_failures.is_empty() {
            line("command failures", self.command_failures.join(", "));
        }
        if !self.server_closes.is_empty() {
            line("server closes", self.server_closes.join(", "));
        }
        if self.reconnects > 0 || self.unrecovered > 0 {
            line(
                "resumes",
                format!(
                    "{} reconnects, {} not recovered",
                    self.reconnects, self.unrecovered
                ),
            );
        }
        if let Some(h) = &self.handshake {
            line(
                "handshake ms p50 / p99 / p99.9 / max",
                Percentiles::cell(&Some(h.clone())),
            );
        }
        if let Some(c) = &self.command_latency {
            line(
                "command (scheduled → 201) ms",
                Percentiles::cell(&Some(c.clone())),
            );
        }
        if let Some(r) = &self.resume {
            line(
                &format!("resume ms, owed {}", self.owed.unwrap_or(0)),
                Percentiles::cell(&Some(r.clone())),
            );
        }
        if let (Some(before), Some(after)) = (self.rss_before_kib, self.rss_after_kib) {
            line(
                "server RSS KiB before → after",
                format!("{before} → {after}"),
            );
        }
        if self.server_cpu_pct.is_some() || self.postgres_cpu_pct.is_some() {
            line(
                "CPU while writing, % of one core: vigil / its PostgreSQL",
                format!(
                    "{} / {}",
                    opt(self.server_cpu_pct, 0),
                    opt(self.postgres_cpu_pct, 0)
                ),
            );
        }
        if let Some(bytes) = self.event_frame_bytes {
            line("event frame, mean payload bytes", format!("{bytes:.0}"));
        }
        if self.clients_verified > 0 {
            line(
                "verified",
                format!(
                    "{} subscribers, {} deliveries, {} lost, {} duplicated, {} unexpected, {} subscribers with errors",
                    self.clients_verified,
                    self.deliveries,
                    self.lost,
                    self.duplicated,
                    self.unexpected,
                    self.clients_with_errors
                ),
            );
        }
        out
    }
}

/// The markdown table of `runs`, followed by each run's notes.
pub fn table(runs: &[RunResult]) -> String {
    let mut out = String::from(HEADER);
    for run in runs {
        out.push_str(&run.row());
    }
    out.push('\n');
    for run in runs {
        out.push_str(&run.notes());
    }
    out
}

/// Appends `run` as one JSON line to `path`.
pub fn append_json(path: &Path, run: &RunResult) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let line = serde_json::to_string(run).context("encoding the result")?;
    writeln!(file, "{line}").with_context(|| format!("writing {}", path.display()))
}

/// Reads the runs of a `--json-out` file.
pub fn read_json(path: &Path) -> anyhow::Result<Vec<RunResult>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::io::BufReader::new(file)
        .lines()
        .filter(|line| !matches!(line, Ok(l) if l.trim().is_empty()))
        .enumerate()
        .map(|(i, line)| {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&line)
                .with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}

/// `(key, count)` pairs as `key×count`, most frequent first, at most `n`.
pub fn top_counts(counts: &std::collections::BTreeMap<String, u32>, n: usize) -> Vec<String> {
    let mut pairs: Vec<_> = counts.iter().collect();
    pairs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    pairs
        .into_iter()
        .take(n)
        .map(|(k, c)| format!("{k}×{c}"))
        .collect()
}
