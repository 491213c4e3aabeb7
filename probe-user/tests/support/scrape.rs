//! One HTTP GET (ureq) and one reading of the Prometheus text format, for
//! the tests (`tests/support`) and for `cargo xtask bench`, which includes
//! this file by path: xtask cannot depend on probe-user (that would build the
//! eBPF object before `cargo xtask bootstrap` has installed bpf-linker), and
//! a crate of its own for two functions is more than they are worth.
use std::time::Duration;

/// GET `path` from `addr` (plain HTTP; `Authorization` when given); the
/// status and body whatever the status, `None` when nothing answered.
/// Chunked and length-delimited bodies alike (ureq decodes them).
pub fn http_get_with(addr: &str, path: &str, authorization: Option<&str>, timeout: Duration) -> Option<(u16, String)> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into();
    let mut request = agent.get(format!("http://{addr}{path}"));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let mut response = request.call().ok()?;
    let status = response.status().as_u16();
    // /metrics of a daemon at its caps runs to tens of MB.
    let body = response.body_mut().with_config().limit(1 << 30).read_to_string().ok()?;
    Some((status, body))
}

/// Sum of the samples of `name` whose labels include all of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            if n != name {
                return None;
            }
            let ok = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Label sets (the text between braces) of `name`'s samples.
pub fn series_of(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}{{")))
        .filter_map(|l| l.split_once('}').map(|(labels, _)| labels.to_string()))
        .collect()
}
