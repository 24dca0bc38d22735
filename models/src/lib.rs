//! Models and self-supervised objectives, written only against `selfsup_engine`.
//!
//! One file per objective; each reads like its paper's equations. The encoder's representation
//! (before any projection head) is what the evaluation protocols in `eval` measure.

pub mod eval;
pub mod heads;
pub mod simclr;
pub mod vit;
