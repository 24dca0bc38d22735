//! Models and SSL objectives, written only against `selfsup_engine`.
