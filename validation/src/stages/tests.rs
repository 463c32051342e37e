//! Unit tests of stages.
