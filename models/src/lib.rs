//! Models and self-supervised objectives, written only against `selfsup_engine`.
//!
//! One file per objective; each reads like its paper's equations. The encoder's representation
//! (before any projection head) is what the evaluation protocols in `eval` measure.

pub mod barlow;
pub mod bart;
pub mod bert;
pub mod byol;
pub mod captions;
pub mod clip;
pub mod dino;
pub mod eval;
pub mod gpt;
pub mod heads;
pub mod mae;
pub mod method;
pub mod moco_v2;
pub mod moco_v3;
pub mod noising;
pub mod simclr;
pub mod simsiam;
pub mod views;
pub mod vit;
