//! Integration tests of guest-image: each module tests one feature through the public API (and,
//! in the slow suites enabled by `cargo xtask ci` with CVM_SLOW_TESTS=1, the real tools: real
//! builds, real boots).

mod gpu;
mod image;
mod launch;
mod measure;
