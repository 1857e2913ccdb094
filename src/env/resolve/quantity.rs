//! Resource quantities (`250m`, `1.5Gi`, `2e3`) read exactly, and the kubelet's
//! `resourceFieldRef` arithmetic on them.

/// An exact quantity: `(-1 if negative) × mantissa × 10^exp10 × 2^exp2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

/// The most significant digits a quantity may have here (real ones have a handful).
const MAX_DIGITS: usize = 36;

impl Quantity {
    /// Zero (an unset request).
    pub(crate) const ZERO: Quantity = Quantity {
        negative: false,
        mantissa: 0,
        exp10: 0,
        exp2: 0,
    };

    /// One (the kubelet's default divisor).
    pub(crate) const ONE: Quantity = Quantity {
        negative: false,
        mantissa: 1,
        exp10: 0,
        exp2: 0,
    };

    /// Parses a quantity with the grammar of apimachinery's `ParseQuantity`: an optional
    /// sign, digits with an optional fraction, then a binary suffix (`Ki`…`Ei`), a decimal
    /// one (`n u m k M G T P E`, or none) or a decimal exponent (`e3`, `E-2`).
    pub(crate) fn parse(text: &str) -> Option<Quantity> {
        if text.is_empty() {
            return None;
        }
        let (negative, rest) = match text.as_bytes()[0] {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_digits, rest) = rest.split_at(int_end);
        let (frac_digits, suffix) = match rest.strip_prefix('.') {
            Some(after) => {
                let end = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                after.split_at(end)
            }
            None => ("", rest),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return None;
        }
        let (suffix_exp10, exp2) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            other => {
                let exponent = other
                    .strip_prefix('e')
                    .or_else(|| other.strip_prefix('E'))?;
                let digits = exponent.trim_start_matches(['+', '-']);
                if digits.is_empty()
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                    || exponent.len() - digits.len() > 1
                {
                    return None;
                }
                (exponent.parse::<i32>().ok()?, 0)
            }
        };
        let mut digits: String = format!("{int_digits}{frac_digits}");
        let mut exp10 = suffix_exp10.checked_sub(i32::try_from(frac_digits.len()).ok()?)?;
        let trimmed = digits.trim_start_matches('0');
        digits = if trimmed.is_empty() {
            "0".to_string()
        } else {
            trimmed.to_string()
        };
        while digits.len() > 1 && digits.ends_with('0') {
            digits.pop();
            exp10 = exp10.checked_add(1)?;
        }
        if digits.len() > MAX_DIGITS {
            return None;
        }
        let mantissa: u128 = digits.parse().ok()?;
        Some(Quantity {
            negative: negative && mantissa != 0,
            mantissa,
            exp10,
            exp2,
        })
    }

    /// Whether the quantity is zero.
    pub(crate) fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// `ceil(self / divisor)` as the kubelet's `resourceFieldRef` computes it (apimachinery's
    /// `convertQuantityToString`): exact, `0` for a zero or negative value or divisor, and
    /// saturated at `i64::MAX`. Older kubelets divided in float64 values already rounded up
    /// to millicores or bytes; for the divisors the API accepts the results are the same up
    /// to 2^53.
    pub(crate) fn ceil_div(&self, divisor: &Quantity) -> i64 {
        if self.is_zero() || self.negative || divisor.is_zero() || divisor.negative {
            return 0;
        }
        let mut numerator = self.mantissa;
        let mut denominator = divisor.mantissa;
        // Powers of two first, then powers of ten, each on the side that needs it.
        let (exp2_up, exp2_down) = if self.exp2 >= divisor.exp2 {
            (self.exp2 - divisor.exp2, 0)
        } else {
            (0, divisor.exp2 - self.exp2)
        };
        let exp10 = i64::from(self.exp10) - i64::from(divisor.exp10);
        let grown = scale(numerator, exp2_up, exp10.max(0));
        let shrunk = scale(denominator, exp2_down, (-exp10).max(0));
        match (grown, shrunk) {
            (Some(n), Some(d)) => {
                numerator = n;
                denominator = d;
            }
            // The numerator is beyond u128 while the denominator is not: far past i64.
            (None, Some(_)) => return i64::MAX,
            // The denominator is beyond u128: the ratio is below one.
            (Some(_), None) => return 1,
            (None, None) => return 1,
        }
        let quotient = numerator.div_ceil(denominator);
        i64::try_from(quotient).unwrap_or(i64::MAX)
    }
}

/// `value × 2^exp2 × 10^exp10`, or `None` past u128.
fn scale(value: u128, exp2: u32, exp10: i64) -> Option<u128> {
    let mut value = value;
    for _ in 0..exp2 {
        value = value.checked_mul(2)?;
    }
    for _ in 0..exp10 {
        value = value.checked_mul(10)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::Quantity;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap_or_else(|| panic!("{text:?} should parse"))
    }

    #[test]
    fn parses_the_apimachinery_grammar() {
        for good in [
            "0",
            "1",
            "250m",
            "1.5",
            ".5",
            "5.",
            "+1",
            "-1",
            "100Mi",
            "1Gi",
            "1Ei",
            "2e3",
            "2E3",
            "1e-3",
            "1E+2",
            "128974848",
            "129e6",
            "123Mi",
            "0.1",
            "1k",
            "1M",
            "1G",
            "1T",
            "1P",
            "1E",
            "1n",
            "1u",
            "007",
            "1.G",
        ] {
            assert!(Quantity::parse(good).is_some(), "{good:?} should parse");
        }
        for bad in [
            "", "m", "1x", "1KiB", "1 Gi", "e3", "1e", "1e+", "1e3.5", "--1", "1mi", "1..5",
            "1e--3", "Gi",
        ] {
            assert!(Quantity::parse(bad).is_none(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn equal_spellings_are_equal() {
        assert_eq!(q("1000m"), q("1"));
        assert_eq!(q("1k"), q("1000"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("0.5"), q("500m"));
        assert_eq!(q("-0"), q("0"));
    }

    #[test]
    fn ceil_div_table() {
        // (value, divisor, result): cpu is value / divisor rounded up; memory likewise.
        let cases = [
            ("250m", "1", 1),
            ("250m", "1m", 250),
            ("1", "1", 1),
            ("1.5", "1", 2),
            ("2", "1", 2),
            ("2", "1m", 2000),
            ("1500m", "1", 2),
            ("0.1m", "1m", 1),
            ("64Mi", "1", 67_108_864),
            ("64Mi", "1Mi", 64),
            ("64Mi", "1M", 68),
            ("100M", "1Mi", 96),
            ("1Gi", "1Mi", 1024),
            ("1Gi", "1Gi", 1),
            ("1", "1Gi", 1),
            ("129e6", "1", 129_000_000),
            ("129e6", "1k", 129_000),
            ("1.5", "1m", 1500),
            ("0", "1", 0),
            ("0", "1m", 0),
            ("1", "0", 0),
            ("-1", "1", 0),
            ("8Ei", "1", i64::MAX),
            ("1e30", "1", i64::MAX),
            ("1", "1e30", 1),
            ("1e-30", "1", 1),
        ];
        for (value, divisor, want) in cases {
            assert_eq!(
                q(value).ceil_div(&q(divisor)),
                want,
                "ceil({value} / {divisor})"
            );
        }
    }
}
