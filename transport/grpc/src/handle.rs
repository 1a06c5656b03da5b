//! Session handles as capabilities: a remote session's handle is the only thing a
//! client needs to run steps in it, extend it or close it, so it carries 128 bits from
//! the operating system's random number generator. No handle can be guessed from
//! another, and a handle from an earlier server process (or another server) is unknown
//! here: `NOT_FOUND`.

use magpie_core::transport::TaskName;
use tonic::Status;

/// Random bits in a handle.
pub(crate) const HANDLE_BITS: usize = 128;

/// A fresh handle of a remote session on `task`'s master:
/// `<task>/remote/<32 lowercase hex digits>`. The task prefix only helps people reading
/// logs; the random part alone identifies the session.
pub(crate) fn session_handle(task: &TaskName) -> Result<String, Status> {
    let mut bits = [0u8; HANDLE_BITS / 8];
    getrandom::fill(&mut bits).map_err(|e| {
        Status::internal(format!(
            "master {task}: the operating system's random number generator failed: {e}"
        ))
    })?;
    let mut handle = format!("{task}/remote/");
    for b in bits {
        handle.push_str(&format!("{b:02x}"));
    }
    Ok(handle)
}

/// What logs show of `handle`: its first 8 random hex digits (32 of the 128 bits), never
/// the whole capability. Works on any string a client sends. Formatted only when shown
/// (a step's disabled debug events cost no allocation and no search).
pub(crate) fn handle_prefix(handle: &str) -> HandlePrefix<'_> {
    HandlePrefix(handle)
}

/// A handle as logs show it ([`handle_prefix`]): `Display` writes its first 8 characters
/// and `…`; `Debug` writes the same, quoted.
#[derive(Clone, Copy)]
pub(crate) struct HandlePrefix<'a>(
    /// The whole handle: the prefix is found when formatted.
    &'a str,
);

impl std::fmt::Display for HandlePrefix<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let random = self.0.rsplit_once("/remote/").map_or(self.0, |(_, r)| r);
        let end = random
            .char_indices()
            .nth(8)
            .map_or(random.len(), |(i, _)| i);
        f.write_str(&random[..end])?;
        f.write_str("…")
    }
}

impl std::fmt::Debug for HandlePrefix<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.to_string(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_prefixes_hide_most_of_the_handle() {
        let task = TaskName::new("worker", 0);
        let h = session_handle(&task).unwrap();
        let p = handle_prefix(&h).to_string();
        assert_eq!(p.chars().count(), 9);
        assert!(h.contains(p.trim_end_matches('…')));
        assert_eq!(handle_prefix("é").to_string(), "é…");
        assert_eq!(
            handle_prefix("x/remote/0123456789ab").to_string(),
            "01234567…"
        );
        assert_eq!(format!("{:?}", handle_prefix("ab")), "\"ab…\"");
    }

    #[test]
    fn handles_are_distinct_and_carry_128_random_bits() {
        let task = TaskName::new("worker", 0);
        let a = session_handle(&task).unwrap();
        let b = session_handle(&task).unwrap();
        assert_ne!(a, b);
        let random = a.strip_prefix("/job:worker/task:0/remote/").unwrap();
        assert_eq!(random.len(), HANDLE_BITS / 4);
        assert!(random.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
