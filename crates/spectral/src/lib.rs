//! The six spectral indicators of attention heads (`docs/spectral.md`), computed from the tensors
//! the explicit attention path exposes (A, and for SVDA sigma, Q^, K^), without libtorch:
//!
//! 1. spectral entropy of sigma ([`spectral_entropy`]),
//! 2. effective rank of the score matrix via a d x d QR core ([`effective_rank`]),
//! 3. spectral sparsity: Hoyer sparsity and share of small sigma ([`hoyer_sparsity`],
//!    [`small_sigma_share`]),
//! 4. angular alignment ([`angular_alignment`]),
//! 5. selectivity ([`selectivity`]),
//! 6. perturbation robustness ([`perturbation_robustness`]),
//! 7. mean attention distance ([`mean_attention_distance`]),
//!
//! and beside them the forms the public SVDA reference code computes ([`gini_selectivity`],
//! [`paper_spectral_entropy`], ...), each selectivity with its value for uniform attention.
//!
//! [`compute_head`] evaluates all of them for one head, [`SpectralRecord::compute`] for a whole
//! model in parallel, ready to append to `spectral.jsonl`. Inputs may be `f32` or `f64`; the maths
//! is f64. With the `plot` feature, [`plot`] draws the logs of a run and [`report::render`]
//! writes a whole report (figures and `index.html`) from run folders. Bad inputs are [`SpectralError`]s, never NaN indicators. Definitions, reading guide and
//! numerical choices: `docs/spectral.md`.

// Links the system OpenBLAS/LAPACK that ndarray-linalg calls into.
extern crate openblas_src;

mod distance;
mod error;
mod head;
mod kernels;
mod map;
#[cfg(feature = "plot")]
pub mod plot;
mod rank;
mod real;
mod record;
#[cfg(feature = "plot")]
pub mod report;
mod run;
mod sigma;
mod validate;

pub use distance::{TokenGrid, mean_attention_distance};
pub use error::{Result, SpectralError};
pub use head::{AttentionKind, HeadIndicators, HeadInput, Indicator, Indicators, compute_head};
pub use map::{
    angular_alignment, gini_selectivity, gini_uniform, perturbation_robustness, selectivity,
};
pub use rank::{
    RANK_CUTOFF, effective_rank, effective_rank_from_singular_values, score_singular_values,
};
pub use real::Real;
pub use record::{DepthProfile, LayerIndicators, SpectralRecord, compute_layer};
pub use run::{
    ATTENTION_DIR, SIGMA_FILE, SPECTRAL_FILE, SigmaSpectra, SigmaSummary, append_line, layer_table,
    read_sigma_log, read_spectral_log,
};
pub use sigma::{
    PAPER_SMALL_SIGMA, SMALL_SIGMA_FRACTION, hoyer_sparsity, paper_effective_rank, paper_sparsity,
    paper_spectral_entropy, small_sigma_share, spectral_entropy,
};
pub use validate::ROW_SUM_TOLERANCE;

unsafe extern "C" {
    /// OpenBLAS's own setter of its worker-pool size (Debian's libopenblas exports it).
    fn openblas_set_num_threads(num_threads: std::ffi::c_int);
}

/// Makes every BLAS/LAPACK call of this process run on the calling thread. OpenBLAS starts a
/// worker pool at load time whose idle workers spin on `sched_yield`; in a process that also runs
/// libtorch (whose own threads hold the cores, and whose GEMMs can resolve to the same OpenBLAS
/// symbols) the two pools fight: measured, a dpt-tiny training step took 0.43 s instead of 0.16 s
/// (docs/performance.md, "Training loop"). The indicators parallelise over heads with rayon and
/// their matrices are d x d, so they lose nothing. Call it once at start-up, before any BLAS work.
pub fn single_threaded_blas() {
    // SAFETY: a plain setter of OpenBLAS's thread count, callable at any time from any thread.
    unsafe { openblas_set_num_threads(1) }
}
