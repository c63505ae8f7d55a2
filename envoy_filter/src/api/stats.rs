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

use crate::abi::{EnvoyConfig, EnvoyFilter, MetricKind, MetricUpdate};
use crate::api::{bytes, with_stream, StreamCtx};

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
/// `ctx` is live (see [`with_stream`]); `name` is readable for `len` bytes;
/// `value` is writable.
pub unsafe extern "C" fn stat(
    ctx: *const StreamCtx,
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
