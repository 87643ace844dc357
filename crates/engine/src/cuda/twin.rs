//! The host twin of the device plan (in progress).
