//! [`SessionTable`]: the sessions remote clients opened on a master, by handle, with the
//! time each was last used — so that sessions whose clients went away without closing
//! them are closed after [`GrpcOptions::session_idle_timeout`](crate::GrpcOptions)
//! (TensorFlow's master does the same with `session_gc_seconds`).
//!
//! Sessions opened through TensorFlow's master service (`tf/`) live in the same table,
//! under the same limit and idle timeout, with their TensorFlow state beside them
//! ([`TfSession`]: graph version, callables).
//!
//! A session counts as in use while a request holds it (its `Arc` is shared); its clock
//! restarts whenever a request takes it and whenever a sweep finds it in use, so a step
//! longer than the timeout never loses its session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use magpie_core::distributed::MasterSession;
use parking_lot::Mutex;

use crate::tf::TfSession;

struct Entry {
    session: Arc<MasterSession>,
    /// Set for a session opened through TensorFlow's master service.
    tf: Option<Arc<TfSession>>,
    last_used: Instant,
}

/// Open remote sessions by handle.
#[derive(Default)]
pub(crate) struct SessionTable {
    entries: Mutex<HashMap<String, Entry>>,
    /// Sessions being opened ([`SessionTable::reserve`]), counted against the limit.
    reserved: Arc<AtomicUsize>,
}

/// A place for one session being opened; released when dropped.
#[derive(Debug)]
pub(crate) struct Reservation(Arc<AtomicUsize>);

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for SessionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTable")
            .field("sessions", &self.len())
            .finish()
    }
}

impl SessionTable {
    /// Reserves a place for a session being opened, unless `max` sessions are open or
    /// being opened; the error is how many.
    pub(crate) fn reserve(&self, max: usize) -> Result<Reservation, usize> {
        let entries = self.entries.lock();
        let n = entries.len() + self.reserved.load(Ordering::Acquire);
        if n >= max {
            return Err(n);
        }
        self.reserved.fetch_add(1, Ordering::AcqRel);
        Ok(Reservation(Arc::clone(&self.reserved)))
    }

    /// Adds a session under `handle`, in the place `_reservation` held.
    pub(crate) fn insert(&self, handle: String, session: MasterSession, reservation: Reservation) {
        self.insert_with(handle, session, None, reservation);
    }

    /// Adds a session under `handle` with its TensorFlow state (`tf`, for a session of
    /// TensorFlow's master service), in the place `reservation` held.
    pub(crate) fn insert_with(
        &self,
        handle: String,
        session: MasterSession,
        tf: Option<Arc<TfSession>>,
        reservation: Reservation,
    ) {
        let mut entries = self.entries.lock();
        entries.insert(
            handle,
            Entry {
                session: Arc::new(session),
                tf,
                last_used: Instant::now(),
            },
        );
        // Under the lock: the session never counts twice.
        drop(reservation);
    }

    /// The session of `handle`, marking it used now.
    pub(crate) fn get(&self, handle: &str) -> Option<Arc<MasterSession>> {
        let mut entries = self.entries.lock();
        let e = entries.get_mut(handle)?;
        e.last_used = Instant::now();
        Some(Arc::clone(&e.session))
    }

    /// The session of `handle` with its TensorFlow state, marking it used now; `None`
    /// for an unknown handle and for a session not opened through TensorFlow's service.
    pub(crate) fn get_tf(&self, handle: &str) -> Option<(Arc<MasterSession>, Arc<TfSession>)> {
        let mut entries = self.entries.lock();
        let e = entries.get_mut(handle)?;
        let tf = Arc::clone(e.tf.as_ref()?);
        e.last_used = Instant::now();
        Some((Arc::clone(&e.session), tf))
    }

    /// Removes the session of `handle` if it was opened through TensorFlow's service.
    pub(crate) fn remove_tf(&self, handle: &str) -> Option<Arc<MasterSession>> {
        let mut entries = self.entries.lock();
        entries.get(handle)?.tf.as_ref()?;
        entries.remove(handle).map(|e| e.session)
    }

    /// Removes the session of `handle`.
    pub(crate) fn remove(&self, handle: &str) -> Option<Arc<MasterSession>> {
        self.entries.lock().remove(handle).map(|e| e.session)
    }

    /// Open sessions.
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Removes and returns the sessions unused for `idle` and held by no request (the
    /// caller closes them, off the runtime: closing releases partitions on the workers).
    pub(crate) fn take_expired(&self, idle: Duration) -> Vec<(String, Arc<MasterSession>)> {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        let mut expired = Vec::new();
        entries.retain(|handle, e| {
            if Arc::strong_count(&e.session) > 1 {
                e.last_used = now;
                return true;
            }
            if now.duration_since(e.last_used) < idle {
                return true;
            }
            expired.push((handle.clone(), Arc::clone(&e.session)));
            false
        });
        expired
    }
}
