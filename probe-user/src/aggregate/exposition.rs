//! The Prometheus text exposition (format 0.0.4) of every family, written
//! to any `io::Write` as it is produced: a gzip encoder, a stream of
//! chunks. The per-connection families are written here from their cells
//! (hand-written: the prometheus crate encodes only whole gathered
//! families, a second full copy of every label set per scrape; the format
//! is a line per sample, docs/architecture.md "Hand-written parts"); the
//! rest, few series, through the crate's `TextEncoder`.
use std::{io, sync::Arc};

use probe_common::Closer;
use prometheus::{Encoder, Registry, TextEncoder};

use super::{
    cells::Cells,
    families::{
        CLOSED, CLOSED_HELP, CONNECT_FAILURES, CONNECT_FAILURES_HELP, Count, RESETS_SENT, RESETS_SENT_HELP, Spread,
    },
};

/// Writes the whole exposition: the per-connection families from `cells`,
/// then `registry`'s.
pub fn write(w: &mut (impl io::Write + ?Sized), cells: &[Arc<Cells>], registry: &Registry) -> io::Result<()> {
    for c in Count::ALL {
        header(w, c.name(), c.help(), "counter")?;
        for s in cells {
            if let Some(v) = s.counter(c) {
                sample(w, c.name(), "", s, None, v)?;
            }
        }
    }
    header(w, CLOSED, CLOSED_HELP, "counter")?;
    for s in cells {
        for closer in Closer::ALL {
            if let Some(v) = s.closed(closer) {
                sample(w, CLOSED, "", s, Some(("closer", closer.name())), v)?;
            }
        }
    }
    header(w, RESETS_SENT, RESETS_SENT_HELP, "counter")?;
    for s in cells {
        for (reason, v) in s.resets_sent() {
            sample(w, RESETS_SENT, "", s, Some(("reason", &reason)), v)?;
        }
    }
    header(w, CONNECT_FAILURES, CONNECT_FAILURES_HELP, "counter")?;
    for s in cells {
        for (reason, v) in s.connect_failures() {
            sample(w, CONNECT_FAILURES, "", s, Some(("reason", reason)), v)?;
        }
    }
    for h in Spread::ALL {
        header(w, h.name(), h.help(), "histogram")?;
        for s in cells {
            let Some(v) = s.hist(h) else { continue };
            for (bound, n) in h.buckets().iter().zip(&v.cumulative) {
                sample(w, h.name(), "_bucket", s, Some(("le", &bound.to_string())), n)?;
            }
            sample(w, h.name(), "_bucket", s, Some(("le", "+Inf")), v.count)?;
            sample(w, h.name(), "_sum", s, None, v.sum)?;
            sample(w, h.name(), "_count", s, None, v.count)?;
        }
    }
    let mut rest = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut rest).map_err(io::Error::other)?;
    w.write_all(&rest)
}

/// The exposition as one string (tests, `doctor` without a daemon).
pub fn to_string(cells: &[Arc<Cells>], registry: &Registry) -> String {
    let mut out = Vec::new();
    let _ = write(&mut out, cells, registry);
    String::from_utf8(out).unwrap_or_default()
}

fn header(w: &mut (impl io::Write + ?Sized), name: &str, help: &str, kind: &str) -> io::Result<()> {
    write!(w, "# HELP {name} ")?;
    escaped(w, help, false)?;
    writeln!(w, "\n# TYPE {name} {kind}")
}

fn sample(
    w: &mut (impl io::Write + ?Sized),
    name: &str,
    suffix: &str,
    s: &Cells,
    extra: Option<(&str, &str)>,
    value: impl std::fmt::Display,
) -> io::Result<()> {
    write!(w, "{name}{suffix}{{comm=\"")?;
    escaped(w, &s.comm, true)?;
    w.write_all(b"\",container=\"")?;
    escaped(w, &s.container, true)?;
    write!(w, "\",direction=\"{}\",endpoint=\"", s.direction)?;
    escaped(w, &s.endpoint, true)?;
    if let Some((label, v)) = extra {
        write!(w, "\",{label}=\"")?;
        escaped(w, v, true)?;
    }
    writeln!(w, "\"}} {value}")
}

/// The format's escapes: backslash and newline everywhere, the double quote
/// in label values.
fn escaped(w: &mut (impl io::Write + ?Sized), s: &str, label_value: bool) -> io::Result<()> {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'"' if label_value => b"\\\"",
            _ => continue,
        };
        w.write_all(&s.as_bytes()[start..i])?;
        w.write_all(esc)?;
        start = i + 1;
    }
    w.write_all(&s.as_bytes()[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the crate's encoder wrote for the same values (format 0.0.4):
    /// dashboards and tests parse both alike.
    #[test]
    fn samples_as_the_crate_wrote_them_with_hostile_names_escaped() {
        let c = Arc::new(Cells::new("a\"b\\c\nd", "", "outbound", "10.0.0.1:80"));
        c.add(Count::Opened, 3);
        c.observe(Spread::Exchanges, 2.0);
        c.close(Closer::Local);
        let text = to_string(&[c], &Registry::new());
        assert!(text.contains(
            "sockprobe_tcp_connections_opened_total{comm=\"a\\\"b\\\\c\\nd\",container=\"\",direction=\"outbound\",endpoint=\"10.0.0.1:80\"} 3\n"
        ), "{text}");
        assert!(text.contains("# TYPE sockprobe_tcp_connection_exchanges histogram\n"), "{text}");
        assert!(text.contains(r#"sockprobe_tcp_connection_exchanges_bucket{comm="a\"b\\c\nd",container="",direction="outbound",endpoint="10.0.0.1:80",le="1"} 0"#), "{text}");
        assert!(text.contains(r#"sockprobe_tcp_connection_exchanges_bucket{comm="a\"b\\c\nd",container="",direction="outbound",endpoint="10.0.0.1:80",le="2"} 1"#), "{text}");
        assert!(
            text.contains(r#"le="+Inf"} 1"#)
                && text
                    .contains(r#"_sum{comm="a\"b\\c\nd",container="",direction="outbound",endpoint="10.0.0.1:80"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"closer="local"} 1"#), "{text}");
        assert!(!text.contains("sockprobe_tcp_unread_closes_total{"), "untouched: no sample\n{text}");
        // Every line is a comment or `name{labels} value`: one line per sample.
        assert!(text.lines().all(|l| l.starts_with('#') || l.split("} ").count() == 2), "{text}");
    }
}
