//! Log-probabilities from one row of logits, in f64.

use super::EvalError;

/// `log softmax(row)[target]`, computed in f64 with the max subtracted.
///
/// Errors when `target` is outside the row or the logits hold NaN.
pub fn log_softmax_at(row: &[f32], target: i64) -> Result<f64, EvalError> {
    crate::perplexity::token_nll(row, target)
        .map(|nll| -nll)
        .map_err(|e| match e {
            crate::RuntimeError::Input(m) => EvalError::Input(m),
            other => EvalError::Runtime(other),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_matches_the_definition() {
        let row = [1.0f32, 2.0, 3.0];
        let z: f64 = row.iter().map(|&x| f64::from(x).exp()).sum();
        let want = (3.0f64.exp() / z).ln();
        assert!((log_softmax_at(&row, 2).unwrap() - want).abs() < 1e-12);
        assert!(log_softmax_at(&row, 3).is_err());
        assert!(log_softmax_at(&row, -1).is_err());
    }
}
