//! The Prometheus text exposition format, version 0.0.4: one `# HELP` and one `# TYPE` line per metric
//! family, then one line per sample, `name{label="value",...} value`.
//!
//! Rules kept here so that no caller has to: metric and label names are `[a-zA-Z_:][a-zA-Z0-9_:]*`
//! (checked, a programming error otherwise); label values escape `\`, `"` and newline; HELP text
//! escapes `\` and newline; values are Go-style floats (`NaN`, `+Inf`, `-Inf`, integers without a
//! fraction). Counters are named `..._total` (checked), units are base units (seconds, bytes).

use std::fmt::Write;

/// A metric's type, as the `# TYPE` line says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
}

impl MetricType {
    fn name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        }
    }
}

/// One sample: its labels (name, value) and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A metric family: a name, its help text and type, and its samples (none: the family is omitted).
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn gauge(name: &'static str, help: &'static str) -> Family {
        Family::new(name, help, MetricType::Gauge)
    }

    pub fn counter(name: &'static str, help: &'static str) -> Family {
        assert!(
            name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        Family::new(name, help, MetricType::Counter)
    }

    fn new(name: &'static str, help: &'static str, kind: MetricType) -> Family {
        assert!(valid_name(name), "invalid metric name {name}");
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a sample with these labels.
    pub fn add(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Family {
        for (n, _) in labels {
            assert!(
                valid_name(n) && !n.starts_with("__"),
                "invalid label name {n}"
            );
        }
        self.samples.push(Sample {
            labels: labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            value,
        });
        self
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A label value as the format writes it between double quotes.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text as the format writes it (the rest of the line).
pub fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A value as the format writes it.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        // Rust prints integral floats without a fraction and never uses an exponent: both are valid.
        format!("{v}")
    }
}

/// Renders families in order; a family without samples is left out entirely.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.name());
        for s in &f.samples {
            out.push_str(f.name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (n, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{n}=\"{}\"", escape_label_value(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(s.value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_type_and_samples_in_order() {
        let mut g = Family::gauge("strata_backups", "Backups in the repository.");
        g.add(&[("stanza", "main"), ("kind", "full")], 2.0)
            .add(&[("stanza", "main"), ("kind", "incr")], 0.0);
        let mut c = Family::counter("strata_archive_failures_total", "Failed attempts.");
        c.add(&[], 7.0);
        let empty = Family::gauge("strata_verify_last_timestamp_seconds", "Never verified.");
        assert_eq!(
            render(&[g, empty, c]),
            "# HELP strata_backups Backups in the repository.\n\
             # TYPE strata_backups gauge\n\
             strata_backups{stanza=\"main\",kind=\"full\"} 2\n\
             strata_backups{stanza=\"main\",kind=\"incr\"} 0\n\
             # HELP strata_archive_failures_total Failed attempts.\n\
             # TYPE strata_archive_failures_total counter\n\
             strata_archive_failures_total 7\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(
            escape_label_value("a\\b\"c\nd é"),
            "a\\\\b\\\"c\\nd é".to_string()
        );
        assert_eq!(
            escape_help("one\\two\nthree \"q\""),
            "one\\\\two\\nthree \"q\""
        );
        let mut f = Family::gauge("strata_info", "Line one\nline two \\ done.");
        f.add(&[("stanza", "we\"ird\\\nname")], 1.0);
        assert_eq!(
            render(&[f]),
            "# HELP strata_info Line one\\nline two \\\\ done.\n\
             # TYPE strata_info gauge\n\
             strata_info{stanza=\"we\\\"ird\\\\\\nname\"} 1\n"
        );
    }

    #[test]
    fn values_are_written_as_the_format_wants() {
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(1_795_000_000.0), "1795000000");
        assert_eq!(format_value(2.5), "2.5");
        assert_eq!(format_value(-3.0), "-3");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(
            format_value(u64::MAX as f64).parse::<f64>().unwrap(),
            u64::MAX as f64
        );
    }

    #[test]
    #[should_panic(expected = "must end in _total")]
    fn a_counter_must_end_in_total() {
        Family::counter("strata_archived_segments", "x");
    }

    #[test]
    #[should_panic(expected = "invalid label name")]
    fn label_names_are_checked() {
        Family::gauge("strata_x", "x").add(&[("bad-name", "v")], 1.0);
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("strata_backup_last_duration_seconds"));
        assert!(valid_name("a:b_c9"));
        assert!(!valid_name("9lives"));
        assert!(!valid_name("with space"));
        assert!(!valid_name(""));
    }
}
