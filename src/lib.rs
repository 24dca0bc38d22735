//! selfsup: what the programs share — the generic pre-training run, its flags and main job, the
//! GPT and BERT runs and jobs, the embed job, the results report and plots — over the engine and
//! the models, re-exported here.
pub use selfsup_engine as engine;
pub use selfsup_models as models;
pub mod allocator;
pub mod bart;
pub mod bert;
pub mod embed;
pub mod flags;
pub mod gpt;
pub mod mlm_run;
pub mod plot;
pub mod pretrain;
pub mod program;
pub mod report;
pub mod run;
mod setup;
pub mod text_run;
mod training;
