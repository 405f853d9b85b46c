//! What the dynamic loader must do before `main`, kept small (docs/BENCHMARKS.md "Start-up").
//!
//! Every `xrat` process pays for each shared library it needs: the loader opens and maps it,
//! relocates it and looks each imported symbol up through it. Scripts run `xrat status` per call,
//! so two of the four libraries are not needed:
//! - libgcc_s.so.1 only provides the unwinder; build.rs links the same unwinder statically
//!   (`libgcc_eh.a`, what `gcc -static-libgcc` does).
//! - libm.so.6 only provides `log` (SQLite) and `pow` (indicatif). They are defined here, from
//!   the `libm` crate, so the linker resolves both in the binary and `--as-needed` drops libm.
//!
//! Every binary that links this library gets them (the tests, benches, fuzz targets and
//! `xrat-api` too), and all code in it that calls `log` or `pow` reaches them, `f64::ln` and
//! `f64::powf` included: the same results within the libm crate's error bound (under 1 ulp),
//! without errno, which Rust never reads for them.

/// The natural logarithm (SQLite's FTS5 ranking calls it).
#[no_mangle]
pub extern "C" fn log(x: f64) -> f64 {
    libm::log(x)
}

/// `x` to the power `y` (indicatif's rate estimates call it).
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    use std::f64::consts::{E, LN_10, LN_2};

    // Known values, not `f64::ln`/`powf`: in this binary those call the functions under test.
    #[test]
    fn log_gives_known_values() {
        for (x, want) in [
            (1.0, 0.0),
            (E, 1.0),
            (2.0, LN_2),
            (10.0, LN_10),
            (1e300, 300.0 * LN_10),
        ] {
            let got = super::log(x);
            assert!(
                (got - want).abs() <= 2.0 * f64::EPSILON * want.abs().max(1.0),
                "log({x}) = {got}"
            );
        }
        assert_eq!(super::log(0.0), f64::NEG_INFINITY);
        assert!(super::log(-1.0).is_nan());
    }

    #[test]
    fn pow_gives_known_values() {
        let cases = [
            (2.0, 10.0, 1024.0),
            (10.0, -3.0, 0.001),
            (4.0, 0.5, 2.0),
            (0.0, 0.0, 1.0),
            (-2.0, 3.0, -8.0),
        ];
        for (x, y, want) in cases {
            let got = super::pow(x, y);
            assert!(
                (got - want).abs() <= f64::EPSILON * want.abs(),
                "pow({x}, {y}) = {got}"
            );
        }
        assert!(super::pow(-2.0, 0.5).is_nan());
    }
}
