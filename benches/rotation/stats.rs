//! Medians and percentiles, and the results file the report script reads.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

/// The `q` quantile (0..=1) of `values` by nearest rank; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The median (nearest rank, so always one of the values).
pub fn median(values: &[f64]) -> Option<f64> {
    quantile(values, 0.5)
}

/// Microseconds.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Every measured row, written to `XRAT_BENCH_OUT` (default `target/rotation-results.json`)
/// after each section, so an interrupted run keeps what it measured.
pub struct Results {
    path: PathBuf,
    meta: Value,
    rows: Vec<Value>,
}

impl Results {
    pub fn new(meta: Value) -> Results {
        let path = std::env::var_os("XRAT_BENCH_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/rotation-results.json")
            });
        Results {
            path,
            meta,
            rows: Vec::new(),
        }
    }

    /// A note on the run (a system that was skipped, and why).
    pub fn note(&mut self, text: String) {
        eprintln!("note: {text}");
        let notes = self.meta["notes"].as_array_mut();
        match notes {
            Some(notes) => notes.push(json!(text)),
            None => self.meta["notes"] = json!([text]),
        }
        self.save();
    }

    /// One row: `section`, `metric` and `system` name it; `fields` holds its numbers.
    pub fn add(&mut self, section: &str, metric: &str, system: &str, fields: Value) {
        eprintln!("{section} / {metric} / {system}: {fields}");
        let mut row = json!({ "section": section, "metric": metric, "system": system });
        if let (Some(row), Some(fields)) = (row.as_object_mut(), fields.as_object()) {
            row.extend(fields.clone());
        }
        self.rows.push(row);
        self.save();
    }

    fn save(&self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let all = json!({ "meta": self.meta, "rows": self.rows });
        let text = serde_json::to_string_pretty(&all).expect("results serialize");
        if let Err(error) = std::fs::write(&self.path, text) {
            eprintln!("note: cannot write {}: {error}", self.path.display());
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// p50, p99 and the count of latency samples in µs.
pub fn latency_fields(samples_us: &[f64]) -> Value {
    json!({
        "p50_us": quantile(samples_us, 0.5),
        "p99_us": quantile(samples_us, 0.99),
        "n": samples_us.len(),
    })
}
