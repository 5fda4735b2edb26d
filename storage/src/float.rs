//! INCRBYFLOAT's arithmetic, delegated to C for Redis's exact long-double results.

use std::os::raw::{c_char, c_int};

extern "C" {
    fn ringkv_incrbyfloat(
        current: *const c_char,
        current_len: usize,
        has_current: c_int,
        incr: *const c_char,
        incr_len: usize,
        out: *mut c_char,
        out_len: usize,
    ) -> c_int;
}

/// Why an INCRBYFLOAT could not be computed.
#[derive(Debug, PartialEq, Eq)]
pub enum FloatError {
    /// The stored value or the increment is not a float.
    NotFloat,
    /// The sum is NaN or infinite.
    NanOrInfinity,
}

/// `current + incr` formatted as Redis formats it (`current` absent counts as 0).
pub fn incr_by_float(current: Option<&[u8]>, incr: &[u8]) -> Result<Vec<u8>, FloatError> {
    let mut out = vec![0u8; 5200];
    let (ptr, len) = current.map_or((std::ptr::null(), 0), |c| (c.as_ptr(), c.len()));
    // SAFETY: every pointer is valid for the length passed with it; the C side writes at
    // most out.len() bytes and returns the length it wrote.
    let n = unsafe {
        ringkv_incrbyfloat(
            ptr.cast(),
            len,
            c_int::from(current.is_some()),
            incr.as_ptr().cast(),
            incr.len(),
            out.as_mut_ptr().cast(),
            out.len(),
        )
    };
    match n {
        -1 | -2 => Err(FloatError::NotFloat),
        n if n < 0 => Err(FloatError::NanOrInfinity),
        n => {
            out.truncate(n as usize);
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_print_as_redis_prints_them() {
        assert_eq!(incr_by_float(Some(b"10.50"), b"0.1"), Ok(b"10.6".to_vec()));
        assert_eq!(incr_by_float(None, b"5.0e3"), Ok(b"5000".to_vec()));
        assert_eq!(incr_by_float(Some(b"3"), b"-3"), Ok(b"0".to_vec()));
        assert_eq!(incr_by_float(Some(b"1"), b"1.5"), Ok(b"2.5".to_vec()));
    }

    #[test]
    fn bad_numbers_are_refused() {
        assert_eq!(incr_by_float(Some(b"abc"), b"1"), Err(FloatError::NotFloat));
        assert_eq!(incr_by_float(None, b" 1"), Err(FloatError::NotFloat));
        assert_eq!(incr_by_float(None, b"nan"), Err(FloatError::NotFloat));
        assert_eq!(incr_by_float(None, b""), Err(FloatError::NotFloat));
        assert_eq!(incr_by_float(Some(b"\0"), b"0"), Err(FloatError::NotFloat));
        assert_eq!(
            incr_by_float(Some(b"1\x002"), b"0"),
            Err(FloatError::NotFloat)
        );
        assert_eq!(incr_by_float(None, b"1\0"), Err(FloatError::NotFloat));
        assert_eq!(
            incr_by_float(Some(b"inf"), b"1"),
            Err(FloatError::NanOrInfinity)
        );
    }
}
