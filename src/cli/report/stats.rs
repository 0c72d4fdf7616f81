//! The statistics behind the checks: a daily share is a proportion of a
//! count, and with few events a swing of a handful of them moves it by many
//! points. A check alerts only when the counts say so at the configured
//! confidence: the Wilson score interval for a share against a threshold,
//! and a two-proportion z-test for a day against its trailing window.

use statrs::distribution::{ContinuousCDF, Normal};

/// The one-sided standard normal quantile for `confidence` (0.99 → 2.326).
/// A confidence of 0.5 gives 0: the checks compare the bare shares.
pub fn z_one_sided(confidence: f64) -> f64 {
    // `Normal::standard()` cannot fail; 0..1 is checked by the config, and
    // the clamp keeps a hand-built value from reaching ±∞.
    Normal::standard().inverse_cdf(confidence.clamp(0.5, 1.0 - 1e-12))
}

/// The Wilson score interval of `successes` out of `n` at `z`: `(low, high)`,
/// or `None` for `n = 0`. Unlike the normal approximation it stays within
/// 0..1 and is sound for small counts and shares near 0 or 1.
pub fn wilson(successes: u64, n: u64, z: f64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let n = n as f64;
    let p = (successes as f64 / n).min(1.0);
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(((center - half).max(0.0), (center + half).min(1.0)))
}

/// The pooled two-proportion z statistic of `x1/n1` against `x2/n2`:
/// positive when the first share is the higher. `None` when either side is
/// empty, or when both shares are 0 or both 1 (no variance: no evidence of
/// a difference either way).
pub fn two_proportion_z(x1: u64, n1: u64, x2: u64, n2: u64) -> Option<f64> {
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let (x1, n1, x2, n2) = (x1 as f64, n1 as f64, x2 as f64, n2 as f64);
    let pooled = (x1 + x2) / (n1 + n2);
    let var = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2);
    if var <= 0.0 {
        return None;
    }
    Some((x1 / n1 - x2 / n2) / var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_the_usual_confidences() {
        assert!((z_one_sided(0.95) - 1.6449).abs() < 1e-3);
        assert!((z_one_sided(0.99) - 2.3263).abs() < 1e-3);
        assert_eq!(z_one_sided(0.5), 0.0);
    }

    #[test]
    fn wilson_matches_published_values() {
        // 8 of 10 at 95 % two-sided (z = 1.96): 0.490 .. 0.943.
        let (lo, hi) = wilson(8, 10, 1.96).unwrap();
        assert!((lo - 0.4902).abs() < 1e-3, "{lo}");
        assert!((hi - 0.9433).abs() < 1e-3, "{hi}");
        // z = 0 is the bare share.
        assert_eq!(wilson(3, 4, 0.0), Some((0.75, 0.75)));
        assert_eq!(wilson(0, 0, 1.0), None);
        let (lo, hi) = wilson(0, 5, 2.0).unwrap();
        assert_eq!(lo, 0.0);
        assert!(hi > 0.0 && hi < 1.0);
    }

    #[test]
    fn two_proportions() {
        // 60/100 against 40/100: pooled 0.5, z = 0.2 / sqrt(0.005) = 2.828.
        let z = two_proportion_z(60, 100, 40, 100).unwrap();
        assert!((z - 2.8284).abs() < 1e-3, "{z}");
        assert!(two_proportion_z(40, 100, 60, 100).unwrap() < 0.0);
        assert_eq!(two_proportion_z(0, 10, 0, 70), None);
        assert_eq!(two_proportion_z(1, 0, 0, 70), None);
    }
}
