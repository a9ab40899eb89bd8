//! Shared helpers of the integration tests.

use std::path::PathBuf;

/// The real RGB-D samples: `GLASSBOX_REAL_DATA`, else `<workspace root>/../shared/data/real`.
pub fn real_data() -> PathBuf {
    std::env::var_os("GLASSBOX_REAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/real")
        })
}
