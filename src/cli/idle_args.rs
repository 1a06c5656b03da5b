//! `magpie server`'s flags for its scheduler's idle workers, and the server's default:
//! a short spin with at most half the workers searching, and no spin at all when the
//! workers outnumber the cores (a server's pool shares its cores with its network
//! threads and often with other tasks; spinning idle workers take the CPU the request
//! handlers need). Also the warm window of the process's CPUs after the server's runtime
//! goes idle (`--warm-window-us`, see `magpie::grpc::WarmCpus`), and how long the
//! server's network runtime polls its sockets without sleeping after it answers
//! (`--busy-poll-us`, see `GrpcOptions::busy_poll`).

use std::time::Duration;

use clap::Args;
use magpie::grpc::{DEFAULT_BUSY_POLL, DEFAULT_WARM_WINDOW};
use magpie::scheduler::IdleSpin;

/// How the task's idle scheduler workers look for work.
#[derive(Debug, Default, Args)]
pub(crate) struct IdleArgs {
    /// How long an idle scheduler worker looks for work before it sleeps: `short` (8
    /// spin then 2 yield rounds), `long` (64+16, a local session's default: for a server
    /// alone on its cores), `off`, or SPIN+YIELD rounds (e.g. `16+4`). Default: `short`,
    /// or `off` when --workers exceeds the available cores.
    #[arg(long, value_name = "SPIN")]
    pub(crate) idle_spin: Option<IdleSpin>,
    /// At most this many idle workers look for work at once; the others sleep right away
    /// (default: half the workers, at least 1).
    #[arg(long, value_name = "N")]
    pub(crate) max_searching: Option<usize>,
    /// Microseconds the machine's CPUs are kept from halting after the server's network
    /// runtime goes idle, by one lowest-priority (SCHED_IDLE) spinner thread per CPU, so
    /// the next request of a burst of steps wakes a running CPU (on a VM, tens of
    /// microseconds less per hop). Costs up to this much CPU time per CPU after each
    /// request, none while idle; 0 turns it off. Default: 1000.
    #[arg(long, value_name = "US")]
    pub(crate) warm_window_us: Option<u64>,
    /// Microseconds the server's network runtime polls its sockets without sleeping
    /// after it writes an answer or a request, so the next message of a burst of steps
    /// is read by a running thread instead of one the kernel must wake (on a VM, 10–15
    /// microseconds less per hop). It spins only while messages come within this window
    /// on average and no other thread wants the CPU; 0 turns it off (do so under a CPU
    /// quota). Default: 100.
    #[arg(long, value_name = "US")]
    pub(crate) busy_poll_us: Option<u64>,
}

impl IdleArgs {
    /// The idle spin of a pool of `workers` threads on a machine with `cores` available
    /// cores, as the flags ask.
    pub(crate) fn idle_spin(&self, workers: usize, cores: usize) -> IdleSpin {
        let spin = self.idle_spin.unwrap_or(if workers > cores {
            IdleSpin::OFF
        } else {
            IdleSpin::SHORT
        });
        let cap = self.max_searching.unwrap_or((workers / 2).max(1));
        spin.max_searching(Some(cap))
    }

    /// The server's `GrpcOptions::busy_poll`, as the flag asks (`None`: off).
    pub(crate) fn busy_poll(&self) -> Option<Duration> {
        match self.busy_poll_us {
            None => Some(DEFAULT_BUSY_POLL),
            Some(0) => None,
            Some(us) => Some(Duration::from_micros(us)),
        }
    }

    /// The server's `GrpcOptions::warm_window`, as the flag asks (`None`: off).
    pub(crate) fn warm_window(&self) -> Option<Duration> {
        match self.warm_window_us {
            None => Some(DEFAULT_WARM_WINDOW),
            Some(0) => None,
            Some(us) => Some(Duration::from_micros(us)),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use magpie::scheduler::IdleSpin;

    use super::IdleArgs;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        idle: IdleArgs,
    }

    fn parse(args: &[&str]) -> Result<IdleArgs, clap::Error> {
        let argv = std::iter::once("magpie").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.idle)
    }

    #[test]
    fn the_default_spins_briefly_with_half_the_workers_searching() {
        let idle = parse(&[]).unwrap();
        assert_eq!(idle.idle_spin(4, 4), IdleSpin::SHORT.max_searching(Some(2)));
        assert_eq!(idle.idle_spin(1, 2), IdleSpin::SHORT.max_searching(Some(1)));
        // More workers than cores: no spin at all.
        assert_eq!(idle.idle_spin(3, 2), IdleSpin::OFF.max_searching(Some(1)));
    }

    #[test]
    fn the_flags_override_the_default() {
        let idle = parse(&["--idle-spin", "long", "--max-searching", "3"]).unwrap();
        assert_eq!(idle.idle_spin(8, 2), IdleSpin::LONG.max_searching(Some(3)));
        let idle = parse(&["--idle-spin", "16+4"]).unwrap();
        assert_eq!(
            idle.idle_spin(2, 2),
            IdleSpin::rounds(16, 4).max_searching(Some(1))
        );
    }

    #[test]
    fn busy_polling_defaults_to_the_transports_and_zero_turns_it_off() {
        assert_eq!(
            parse(&[]).unwrap().busy_poll(),
            Some(magpie::grpc::DEFAULT_BUSY_POLL)
        );
        assert_eq!(
            parse(&["--busy-poll-us", "40"]).unwrap().busy_poll(),
            Some(std::time::Duration::from_micros(40))
        );
        assert_eq!(parse(&["--busy-poll-us", "0"]).unwrap().busy_poll(), None);
    }

    #[test]
    fn the_warm_window_defaults_to_the_transports_and_zero_turns_it_off() {
        assert_eq!(
            parse(&[]).unwrap().warm_window(),
            Some(magpie::grpc::DEFAULT_WARM_WINDOW)
        );
        let idle = parse(&["--warm-window-us", "500"]).unwrap();
        assert_eq!(
            idle.warm_window(),
            Some(std::time::Duration::from_micros(500))
        );
        assert_eq!(
            parse(&["--warm-window-us", "0"]).unwrap().warm_window(),
            None
        );
    }

    #[test]
    fn a_bad_spin_is_refused_naming_it() {
        let e = parse(&["--idle-spin", "fast"]).unwrap_err().to_string();
        assert!(e.contains("--idle-spin") && e.contains("fast"), "{e}");
    }
}
