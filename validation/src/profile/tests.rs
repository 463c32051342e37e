//! Unit tests of profile.
