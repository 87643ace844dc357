//! The device plan (in progress).
