//! Integration tests of guest-image: real tools, real builds, real boots (slow suites, enabled by
//! `cargo xtask ci` with CVM_SLOW_TESTS=1).

mod image;
