//! The facts bundle of DESIGN.md §6: collecting it from a live host and reading it back (issue 6).
