//! One logging shim: `defmt` when that feature is on, nothing otherwise.
//! Core logs rarely; hosts report what matters to users.

#[cfg(feature = "defmt")]
macro_rules! trace {
    ($($arg:tt)*) => { defmt::trace!($($arg)*) };
}

#[cfg(not(feature = "defmt"))]
macro_rules! trace {
    ($($arg:tt)*) => {{}};
}
