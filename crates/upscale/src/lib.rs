//! The pipeline (in progress).
