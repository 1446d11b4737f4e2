//! The one way this crate takes a `std::sync::Mutex`.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, carrying on past poisoning. Every mutex here guards plain data (lists, counters,
/// cached samples) that no holder leaves half-changed in a way that matters: a panic is already
/// confined to its own connection or producer, and refusing the lock afterwards would turn one
/// panic into a daemon that stops serving everyone.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
