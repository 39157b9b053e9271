//! A small Prometheus registry: counters (names ending in `_total`) and gauges, with
//! low-cardinality labels, rendered in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};

type Labels = Vec<(String, String)>;

#[derive(Clone, Default)]
pub struct Registry {
    values: Arc<Mutex<BTreeMap<String, BTreeMap<Labels, f64>>>>,
}

impl Registry {
    pub fn inc(&self, name: &str) {
        self.add(name, &[], 1.0);
    }

    pub fn add(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.update(name, labels, |v| *v += value);
    }

    pub fn set(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.update(name, labels, |v| *v = value);
    }

    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        values
            .get(name)
            .and_then(|series| series.get(&owned(labels)))
            .copied()
            .unwrap_or(0.0)
    }

    fn update(&self, name: &str, labels: &[(&str, &str)], f: impl FnOnce(&mut f64)) {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        let series = values.entry(name.to_owned()).or_default();
        f(series.entry(owned(labels)).or_insert(0.0));
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        for (name, series) in values.iter() {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in series {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else {
                    let rendered: Vec<String> = labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                        .collect();
                    let _ = writeln!(out, "{name}{{{}}} {value}", rendered.join(","));
                }
            }
        }
        out
    }
}

fn owned(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_counters_and_gauges() {
        let registry = super::Registry::default();
        registry.inc("nebula_x_total");
        registry.add("nebula_x_total", &[], 2.0);
        registry.set("nebula_lag_events", &[("projection", "no\"des")], 5.0);
        let text = registry.render();
        assert!(
            text.contains("# TYPE nebula_x_total counter\nnebula_x_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("nebula_lag_events{projection=\"no\\\"des\"} 5"),
            "{text}"
        );
        assert_eq!(registry.get("nebula_x_total", &[]), 3.0);
    }
}
