//! The element types accepted at the API. Models hand over float32 maps, the maths runs in f64
//! (section 9 sums hundreds of thousands of `a ln a` terms per head), so inputs are widened block by
//! block or one small matrix at a time, never as a whole N x N copy.

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A float element type the indicators accept (`f32` or `f64`); everything is computed in `f64`.
pub trait Real: sealed::Sealed + Copy + Send + Sync + std::fmt::Debug + 'static {
    /// Widens to `f64` without loss.
    fn to_f64(self) -> f64;
}

impl Real for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Real for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}
