//! [`IdleSpin`]: how long an idle worker keeps looking for work before it parks, and how
//! many of a pool's workers may look at once.
//!
//! # What it promises
//!
//! Nothing about correctness: every setting keeps the pool's guarantees (no lost
//! wake-ups, work conservation; see [`sleep`](super::sleep)). It trades CPU for latency.
//! A worker that keeps spinning picks up the next job within a steal attempt; a parked
//! worker costs a futex wake (a few microseconds) to get back, but leaves its core to other
//! threads. A pool that has the machine to itself (a local session, a bench) gains from
//! spinning; a server whose pool shares few cores with its network threads and with other
//! processes loses: its idle workers take the CPU its handlers need.
//!
//! # Searching workers
//!
//! Besides the length of the spin, [`IdleSpin::max_searching`] caps how many idle workers
//! spin at once, as tokio caps its searching workers: the others park right after one
//! search that found nothing (and a push wakes them as it wakes any sleeper, see
//! [`sleep`](super::sleep)). So an idle pool of many workers keeps at most the cap of them
//! spinning.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// How idle workers of a pool look for work before they park
/// ([`ThreadPoolBuilder::idle_spin`](super::ThreadPoolBuilder::idle_spin)).
///
/// An idle worker makes `spin_rounds` rounds of a steal attempt and a short busy pause,
/// then `yield_rounds` rounds of a steal attempt and `yield_now`, then parks until a push
/// wakes it. At most `max_searching` workers of the pool do this at once; the others park
/// right away.
///
/// ```
/// use magpie_scheduler::{IdleSpin, ThreadPool};
///
/// // A pool that shares its cores with other threads: brief spins, one searcher.
/// let spin: IdleSpin = "short".parse()?;
/// let pool = ThreadPool::builder()
///     .num_workers(2)
///     .idle_spin(spin.max_searching(Some(1)))
///     .build()?;
/// assert_eq!(pool.idle_spin(), IdleSpin::SHORT.max_searching(Some(1)));
/// assert_eq!("16+4".parse::<IdleSpin>()?, IdleSpin::rounds(16, 4));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdleSpin {
    spin_rounds: u32,
    yield_rounds: u32,
    max_searching: Option<usize>,
}

impl IdleSpin {
    /// The default: 64 spin rounds, then 16 yield rounds (tens of microseconds), every
    /// worker may search. For a pool that has its cores to itself.
    pub const LONG: IdleSpin = IdleSpin::rounds(64, 16);
    /// 8 spin rounds, then 2 yield rounds: for a pool that shares its cores with other
    /// threads (a server's network threads, other processes).
    pub const SHORT: IdleSpin = IdleSpin::rounds(8, 2);
    /// No spin: a worker parks after one search that found nothing.
    pub const OFF: IdleSpin = IdleSpin::rounds(0, 0);

    /// `spin` busy rounds, then `yields` yielding rounds; every worker may search.
    pub const fn rounds(spin: u32, yields: u32) -> IdleSpin {
        IdleSpin {
            spin_rounds: spin,
            yield_rounds: yields,
            max_searching: None,
        }
    }

    /// The same spin with at most `n` workers searching at once (`None`: no cap; `0`
    /// acts as [`IdleSpin::OFF`]'s spin).
    pub const fn max_searching(self, n: Option<usize>) -> IdleSpin {
        IdleSpin {
            max_searching: n,
            ..self
        }
    }

    /// Rounds of a steal attempt plus a short busy pause.
    pub const fn spin_rounds(&self) -> u32 {
        self.spin_rounds
    }

    /// Rounds of a steal attempt plus `yield_now`, after the spin rounds.
    pub const fn yield_rounds(&self) -> u32 {
        self.yield_rounds
    }

    /// The cap on searching workers, if any.
    pub const fn searching_cap(&self) -> Option<usize> {
        self.max_searching
    }

    /// Whether a worker searches at all (some rounds, and a cap above zero).
    pub(crate) fn searches(&self) -> bool {
        self.spin_rounds + self.yield_rounds > 0 && self.max_searching != Some(0)
    }
}

impl Default for IdleSpin {
    /// [`IdleSpin::LONG`].
    fn default() -> IdleSpin {
        IdleSpin::LONG
    }
}

/// An [`IdleSpin`] that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("idle spin {0:?}: expected `long`, `short`, `off` or SPIN+YIELD rounds (e.g. `8+2`)")]
pub struct ParseIdleSpinError(String);

impl FromStr for IdleSpin {
    type Err = ParseIdleSpinError;

    /// `long`, `short`, `off`, or `SPIN+YIELD` rounds such as `8+2` (no searching cap).
    fn from_str(s: &str) -> Result<IdleSpin, ParseIdleSpinError> {
        let bad = || ParseIdleSpinError(s.to_owned());
        match s.trim().to_ascii_lowercase().as_str() {
            "long" => Ok(IdleSpin::LONG),
            "short" => Ok(IdleSpin::SHORT),
            "off" => Ok(IdleSpin::OFF),
            other => {
                let (spin, yields) = other.split_once('+').ok_or_else(bad)?;
                let spin = spin.trim().parse().map_err(|_| bad())?;
                let yields = yields.trim().parse().map_err(|_| bad())?;
                Ok(IdleSpin::rounds(spin, yields))
            }
        }
    }
}

impl fmt::Display for IdleSpin {
    /// The rounds as `FromStr` reads them (`long`, `short`, `off` or `S+Y`), then the cap
    /// if any (`, at most N searching`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.spin_rounds, self.yield_rounds) {
            (64, 16) => f.write_str("long")?,
            (8, 2) => f.write_str("short")?,
            (0, 0) => f.write_str("off")?,
            (s, y) => write!(f, "{s}+{y}")?,
        }
        if let Some(n) = self.max_searching {
            write!(f, ", at most {n} searching")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::IdleSpin;

    #[test]
    fn names_and_rounds_parse_and_print_back() {
        for (text, spin) in [
            ("long", IdleSpin::LONG),
            ("SHORT", IdleSpin::SHORT),
            (" off ", IdleSpin::OFF),
            ("3+0", IdleSpin::rounds(3, 0)),
            ("0 + 5", IdleSpin::rounds(0, 5)),
        ] {
            let parsed: IdleSpin = text.parse().unwrap();
            assert_eq!(parsed, spin, "{text}");
            assert_eq!(parsed.to_string().parse::<IdleSpin>().unwrap(), spin);
        }
        assert_eq!(IdleSpin::default(), IdleSpin::rounds(64, 16));
        assert_eq!(
            IdleSpin::SHORT.max_searching(Some(1)).to_string(),
            "short, at most 1 searching"
        );
    }

    #[test]
    fn bad_text_is_an_error_naming_it() {
        for text in ["", "fast", "8", "8+", "+2", "-1+2", "8+2+1"] {
            let e = text.parse::<IdleSpin>().unwrap_err();
            assert!(e.to_string().contains(&format!("{text:?}")), "{e}");
        }
    }

    #[test]
    fn searching_needs_rounds_and_a_cap_above_zero() {
        assert!(IdleSpin::LONG.searches());
        assert!(IdleSpin::rounds(0, 1).searches());
        assert!(!IdleSpin::OFF.searches());
        assert!(!IdleSpin::LONG.max_searching(Some(0)).searches());
        assert!(IdleSpin::LONG.max_searching(Some(1)).searches());
    }
}
