//! Optimisation passes over the IR, run once at load time.
//!
//! Every pass preserves the result bit for bit: fusion keeps the unfused order of the
//! floating-point operations (see [`crate::Epilogue`]).
