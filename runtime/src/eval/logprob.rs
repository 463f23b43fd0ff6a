//! Log-probabilities from one row of logits, in f64.

use super::EvalError;

/// `log softmax(row)[target]`, computed in f64 with the max subtracted.
///
/// Errors when `target` is outside the row or the logits hold NaN.
pub fn log_softmax_at(row: &[f32], target: i64) -> Result<f64, EvalError> {
    let t = usize::try_from(target)
        .ok()
        .filter(|&t| t < row.len())
        .ok_or_else(|| {
            EvalError::Input(format!(
                "token id {target} is out of range for a vocabulary of {}",
                row.len()
            ))
        })?;
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let sum: f64 = row.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    let lp = f64::from(row[t]) - max - sum.ln();
    if lp.is_nan() {
        return Err(EvalError::Input("the model's logits contain NaN".into()));
    }
    Ok(lp)
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
