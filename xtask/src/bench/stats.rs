//! Medians and their distribution-free intervals: every ratio the report
//! prints goes through [`ratio_cell`].

pub(crate) fn median_and_spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mid = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    (mid, v[0], v[v.len() - 1])
}

/// `median% [lo–hi%]` for ratios: the median and, from 6 samples, its
/// 95 % interval ([`median_interval`]); below that `(min–max%)`.
pub(crate) fn ratio_cell(mut v: Vec<f64>) -> String {
    let (m, lo, hi) = median_and_spread(v.clone());
    v.sort_by(|a, b| a.total_cmp(b));
    match median_interval(v.len()) {
        Some((k, j, _)) => format!("{:.1}% [{:.1}–{:.1}%]", m * 100.0, v[k - 1] * 100.0, v[j - 1] * 100.0),
        None => format!("{:.1}% ({:.1}–{:.1}%)", m * 100.0, lo * 100.0, hi * 100.0),
    }
}

/// A distribution-free confidence interval for the median of `n` samples:
/// the 1-based ranks (k, n + 1 - k) of the sorted samples for the largest k
/// whose interval holds the median with probability >= 95 %, and that
/// probability, 1 - 2 P(X < k) for X ~ Binomial(n, 1/2). `None` below 6
/// samples, where even (min, max) is short of 95 %.
pub(crate) fn median_interval(n: usize) -> Option<(usize, usize, f64)> {
    // ln P(X = k - 1), kept as a logarithm: C(n, k) overflows f64 and 2^-n
    // underflows it from about a thousand samples (the paired phase's pairs).
    let mut ln_term = -(n as f64) * std::f64::consts::LN_2;
    let mut below = 0.0; // P(X < k)
    let mut best = None;
    for k in 1..=n.div_ceil(2) {
        below += ln_term.exp();
        ln_term += ((n - (k - 1)) as f64 / k as f64).ln();
        let level = 1.0 - 2.0 * below;
        if level < 0.95 {
            break;
        }
        best = Some((k, n + 1 - k, level));
    }
    best
}
