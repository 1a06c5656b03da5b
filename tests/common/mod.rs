//! Helpers shared by the tests that run real `magpie server` processes: free loopback
//! ports, and a server child process that is stopped with SIGTERM or killed when
//! dropped (continued first, in case a test froze it), so no test leaves one behind.

#![allow(dead_code, unreachable_pub)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free when asked; a test binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `127.0.0.1:<free port>`.
pub fn free_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The `magpie` binary, with the client environment variables that would change a
/// server's behaviour removed (a test sets what it needs).
pub fn magpie() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_magpie"));
    c.env_remove("MAGPIE_TLS_CA")
        .env_remove("MAGPIE_AUTH_TOKEN_FILE")
        .env_remove("TF_CONFIG");
    c
}

/// Waits until something accepts connections on `address`.
pub fn wait_listening(address: &str, deadline: Duration) {
    let until = Instant::now() + deadline;
    while std::net::TcpStream::connect(address).is_err() {
        assert!(Instant::now() < until, "nothing listens on {address}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Calls `step` until it succeeds (for up to 30 s, every 100 ms), then returns its value;
/// panics with `what` and the last error if it never does. For a peer coming back.
pub fn retry_until_ok<T, E: std::fmt::Display>(
    what: &str,
    mut step: impl FnMut() -> Result<T, E>,
) -> T {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match step() {
            Ok(v) => return v,
            Err(e) if Instant::now() < until => {
                eprintln!("retrying ({what}): {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{what}: still failing after 30 s: {e}"),
        }
    }
}

/// A `magpie server` child process.
pub struct ServerProcess {
    child: Child,
    /// The first line it printed ("serving /job:J/task:T on grpc://...").
    pub line: String,
}

impl ServerProcess {
    /// Starts `magpie` with `command` (its arguments and environment set by the caller;
    /// stdout is taken here) and waits for its "serving" line.
    pub fn start(mut command: Command) -> ServerProcess {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("magpie starts");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let p = ServerProcess { child, line };
        assert!(p.line.starts_with("serving"), "magpie said {:?}", p.line);
        p
    }

    /// `magpie server` with these arguments, stderr dropped.
    pub fn server<I, S>(args: I) -> ServerProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = magpie();
        c.arg("server").args(args).stderr(Stdio::null());
        ServerProcess::start(c)
    }

    /// `magpie server` with these arguments, its stderr (logs) written to `log`.
    pub fn server_logged<I, S>(args: I, log: &std::path::Path) -> ServerProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = magpie();
        let file = std::fs::File::create(log).unwrap();
        c.arg("server").args(args).stderr(file);
        ServerProcess::start(c)
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`libc::SIGSTOP`, `SIGCONT`, ...).
    pub fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: `pid` is our own child, not yet reaped (reaped only by `stop` or drop).
        let r = unsafe { libc::kill(pid, signal) };
        assert_eq!(r, 0, "kill({pid}, {signal}) failed");
    }

    /// Freezes it (SIGSTOP) and returns once every one of its threads has stopped, within
    /// 30 s. `kill` returns before that: the stop reaches the other threads from the one
    /// that takes the signal, and on a loaded machine that one may wait for a CPU while
    /// the others still answer requests. `waitpid(WUNTRACED)` reports the process stopped
    /// only when the whole group has.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let mut status = 0;
            // SAFETY: `pid` is our own child, not yet reaped; `status` is a valid place for
            // the result. WUNTRACED reports a stop (as well as an exit), WNOHANG returns 0
            // while neither happened.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED | libc::WNOHANG) };
            if r == pid {
                assert!(
                    libc::WIFSTOPPED(status),
                    "magpie server {pid} ended instead of stopping (status {status:#x})"
                );
                return;
            }
            assert_eq!(r, 0, "waitpid({pid}) failed");
            assert!(Instant::now() < until, "magpie server {pid} did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL (a crash, as far as its peers can tell), and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (up to 30 s) for a clean exit.
    pub fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "magpie server exited with {status}");
                return;
            }
            assert!(Instant::now() < until, "magpie server ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.is_running() {
            self.signal(libc::SIGCONT);
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
