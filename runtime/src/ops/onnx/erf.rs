//! The error function, which Rust's standard library lacks.

/// Past this magnitude `erf` is ±1 to well beyond f32 precision
/// (`erfc(5.9) < 1e-16`).
const SATURATION: f64 = 5.9;

/// Below this magnitude the Maclaurin series is used (its terms stay below
/// `e^{x²} ≈ 8·10³`, so cancellation costs at most four digits).
const SERIES_LIMIT: f64 = 3.0;

/// `erf(x)` to about 1e-13 absolute error: the Maclaurin series
/// `2/√π · Σ (-1)ⁿ x²ⁿ⁺¹ / (n! (2n+1))` for small `|x|`, Laplace's
/// continued fraction for `erfc` above, ±1 past [`SATURATION`].
pub(super) fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a >= SATURATION {
        return x.signum();
    }
    if a < SERIES_LIMIT {
        let x2 = x * x;
        let mut term = x; // (-1)ⁿ x²ⁿ⁺¹ / n!
        let mut sum = x;
        for n in 1..400 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs().max(1e-300) {
                break;
            }
        }
        return (sum * std::f64::consts::FRAC_2_SQRT_PI).clamp(-1.0, 1.0);
    }
    // erfc(a) = e^{-a²}/√π · 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + …)))).
    let mut k = a;
    for n in (1..=80).rev() {
        k = a + (n as f64 / 2.0) / k;
    }
    let erfc = (-a * a).exp() * std::f64::consts::FRAC_2_SQRT_PI / (2.0 * k);
    (1.0 - erfc).copysign(x)
}
