//! CUDA back end (work in progress).

pub mod nvrtc;
