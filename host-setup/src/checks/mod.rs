//! The preflight check registry evaluated over a facts bundle (issue 6).
