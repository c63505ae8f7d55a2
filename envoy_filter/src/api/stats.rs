//! What `handle:stats()` calls: counters, gauges and histograms, as Envoy
//! metrics of the filter config, plus the stock filter's own `errors` and
//! `executions` counters.
//!
//! Envoy 1.40 lets a module define metrics only while its config is created,
//! so names are found in the scripts then (`counter("name")`, `gauge(...)`,
//! `histogram(...)` with a literal name); a name made at run time goes to a
//! metric of its kind tagged `name`. Values are kept here too, for `value()`.

use std::collections::HashMap;
use std::ffi::{c_char, c_int};
use std::sync::Mutex;

use resty_ffi::StatsSnapshot;

use crate::abi::{EnvoyConfig, EnvoyFilter, MetricKind, MetricUpdate};
use crate::api::{bytes, with_stream, StreamId};

/// Per-runtime metrics (SPEC §1's `rt:__stats()` fields), tagged `runtime`.
const RUNTIME_METRICS: [(MetricKind, &str); 11] = [
    (MetricKind::Counter, "posted"),
    (MetricKind::Counter, "answered"),
    (MetricKind::Counter, "failed"),
    (MetricKind::Counter, "timed_out"),
    (MetricKind::Counter, "cancelled"),
    (MetricKind::Counter, "queue_full"),
    (MetricKind::Gauge, "in_flight"),
    (MetricKind::Gauge, "queue_len"),
    (MetricKind::Gauge, "p50_us"),
    (MetricKind::Gauge, "p99_us"),
    (MetricKind::Gauge, "max_us"),
];

const KINDS: [(MetricKind, &str); 3] =
    [(MetricKind::Counter, "counter"), (MetricKind::Gauge, "gauge"), (MetricKind::Histogram, "histogram")];

/// The metrics of one filter config (shared by every worker).
#[derive(Default)]
pub struct Metrics {
    /// Ids of the metrics named in the scripts, by kind and name.
    named: HashMap<(MetricKind, Vec<u8>), usize>,
    /// Per kind: the metric tagged `name` for names made at run time.
    tagged: HashMap<MetricKind, usize>,
    errors: Option<usize>,
    executions: Option<usize>,
    /// resty_ffi's per-runtime metrics (tag `runtime`), by name.
    runtime: Vec<(MetricKind, &'static str, usize)>,
    /// Current values, for `value()`.
    values: Mutex<HashMap<(MetricKind, Vec<u8>), u64>>,
}

/// The literal names a script passes to `counter(`, `gauge(` and
/// `histogram(` (a quoted string and nothing else in the parentheses).
fn names_in(source: &str, kind: &str) -> Vec<Vec<u8>> {
    let call = format!("{kind}(");
    let mut names = Vec::new();
    for (at, _) in source.match_indices(&call) {
        let rest = source[at + call.len()..].trim_start();
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else { continue };
        let Some(end) = rest[1..].find(quote) else { continue };
        if rest[1 + end + 1..].trim_start().starts_with(')') {
            names.push(rest.as_bytes()[1..1 + end].to_vec());
        }
    }
    names
}

impl Metrics {
    /// Defines the metrics of `scripts` (names: `lua.[<stat_prefix>.]<name>`).
    pub fn define<'a>(envoy: EnvoyConfig, stat_prefix: &str, scripts: impl Iterator<Item = &'a str> + Clone) -> Metrics {
        let prefix = if stat_prefix.is_empty() { "lua.".to_owned() } else { format!("lua.{stat_prefix}.") };
        let full = |name: &[u8]| [prefix.as_bytes(), name].concat();
        let mut metrics = Metrics {
            errors: envoy.define_metric(MetricKind::Counter, &full(b"errors"), &[]),
            executions: envoy.define_metric(MetricKind::Counter, &full(b"executions"), &[]),
            ..Metrics::default()
        };
        let runtime_prefix = if stat_prefix.is_empty() { "resty_ffi.".to_owned() } else { format!("resty_ffi.{stat_prefix}.") };
        for (kind, name) in RUNTIME_METRICS {
            let full = [runtime_prefix.as_bytes(), name.as_bytes()].concat();
            if let Some(id) = envoy.define_metric(kind, &full, &[b"runtime"]) {
                metrics.runtime.push((kind, name, id));
            }
        }
        for (kind, call) in KINDS {
            if let Some(id) = envoy.define_metric(kind, &full(call.as_bytes()), &[b"name"]) {
                metrics.tagged.insert(kind, id);
            }
            for name in scripts.clone().flat_map(|source| names_in(source, call)) {
                if let std::collections::hash_map::Entry::Vacant(slot) = metrics.named.entry((kind, name.clone())) {
                    if let Some(id) = envoy.define_metric(kind, &full(&name), &[]) {
                        slot.insert(id);
                    }
                }
            }
        }
        metrics
    }

    /// Applies `update` (none: just reads); returns the metric's value.
    fn update(&self, envoy: EnvoyFilter, kind: MetricKind, name: &[u8], update: Option<MetricUpdate>) -> u64 {
        let updated = update.filter(|&update| match self.named.get(&(kind, name.to_vec())) {
            Some(&id) => envoy.update_metric(kind, id, &[], update),
            None => self.tagged.get(&kind).is_some_and(|&id| envoy.update_metric(kind, id, &[name], update)),
        });
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let value = values.entry((kind, name.to_vec())).or_default();
        if let Some(update) = updated {
            *value = match update {
                // u64 arithmetic as Envoy's own stats (a gauge below 0 wraps).
                MetricUpdate::Add(n) => value.wrapping_add(n),
                MetricUpdate::Sub(n) => value.wrapping_sub(n),
                MetricUpdate::Set(n) | MetricUpdate::Record(n) => n,
            };
        }
        *value
    }

    /// Counts a run of `envoy_on_request` or `envoy_on_response` (`executions`).
    pub fn count_execution(&self, envoy: EnvoyFilter) {
        if let Some(id) = self.executions {
            envoy.update_metric(MetricKind::Counter, id, &[], MetricUpdate::Add(1));
        }
    }

    /// Adds what runtime `key` did since it was last published (`was` →
    /// `now`): counters grow by the difference, so each call counts once
    /// however many workers publish it; `in_flight` and `queue_len` move by
    /// theirs, so the gauges sum the workers' runtimes; latencies are set.
    pub fn publish_runtime(&self, envoy: EnvoyFilter, key: &[u8], was: &StatsSnapshot, now: &StatsSnapshot) {
        for &(kind, name, id) in &self.runtime {
            let value = |s: &StatsSnapshot| match name {
                "posted" => s.posted,
                "answered" => s.answered,
                "failed" => s.failed,
                "timed_out" => s.timed_out,
                "cancelled" => s.cancelled,
                "queue_full" => s.queue_full,
                "in_flight" => s.in_flight,
                "queue_len" => s.queue_len,
                "p50_us" => s.p50_us.into(),
                "p99_us" => s.p99_us.into(),
                _ => s.max_us.into(),
            };
            let (before, after) = (value(was), value(now));
            let update = match (kind, name) {
                (MetricKind::Counter, _) if after > before => MetricUpdate::Add(after - before),
                (MetricKind::Counter, _) => continue,
                (_, "in_flight" | "queue_len") if after >= before => MetricUpdate::Add(after - before),
                (_, "in_flight" | "queue_len") => MetricUpdate::Sub(before - after),
                _ => MetricUpdate::Set(after),
            };
            envoy.update_metric(kind, id, &[key], update);
        }
    }

    /// Counts a script error (`errors`).
    pub fn count_error(&self, envoy: EnvoyFilter) {
        if let Some(id) = self.errors {
            envoy.update_metric(MetricKind::Counter, id, &[], MetricUpdate::Add(1));
        }
    }
}

/// Updates metric `name` of `kind` (0 counter, 1 gauge, 2 histogram) with
/// `op` (0 read, 1 add, 2 subtract, 3 set, 4 record) and `amount`; returns its value.
///
/// # Safety
/// `name` is readable for `len` bytes;
/// `value` is writable.
pub unsafe extern "C" fn stat(
    ctx: StreamId,
    kind: c_int,
    name: *const c_char,
    len: usize,
    op: c_int,
    amount: f64,
    value: *mut f64,
) -> c_int {
    with_stream(ctx, |ctx, envoy| {
        let Some(&(kind, _)) = usize::try_from(kind).ok().and_then(|k| KINDS.get(k)) else { return 0 };
        let amount = if amount.is_finite() && amount > 0.0 { amount as u64 } else { 0 };
        let update = match op {
            1 => Some(MetricUpdate::Add(amount)),
            2 => Some(MetricUpdate::Sub(amount)),
            3 => Some(MetricUpdate::Set(amount)),
            4 => Some(MetricUpdate::Record(amount)),
            _ => None,
        };
        let current = ctx.metrics.update(envoy, kind, bytes(name, len), update);
        if !value.is_null() {
            // SAFETY: `value` is writable (contract).
            unsafe { *value = current as f64 };
        }
        1
    })
}
