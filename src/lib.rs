//! selfsup: re-exports.
pub use selfsup_engine as engine;
pub use selfsup_models as models;
pub mod allocator;
pub mod plot;
pub mod simclr_run;
