//! The one error kind callers branch on: bad input from the user (exit code 2).
//!
//! Everything else is an `anyhow::Error` (exit code 1). `xtask` walks the error chain and exits 2
//! when it finds a [`BadInput`] anywhere in it.

/// A user-facing input error: a bad flag value, a bad model, a missing or malformed input file.
/// The message is one line that names the file, key or flag, the value and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Builds an `anyhow::Error` carrying a [`BadInput`].
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(message.into()))
}

/// Returns true when `err` or any error in its chain is a [`BadInput`].
pub fn is_bad_input(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| cause.downcast_ref::<BadInput>().is_some())
}

/// Early-returns a [`BadInput`] error, formatted like `format!`.
#[macro_export]
macro_rules! bail_input {
    ($($arg:tt)*) => {
        return Err($crate::error::bad_input(format!($($arg)*)))
    };
}
