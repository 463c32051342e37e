//! Unit tests of the launch rendering helpers: quoting, paths, MMIO sizing and warnings.
