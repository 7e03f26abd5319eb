//! Working inside a network namespace without `ip netns exec`: that one also gives the command
//! a mount namespace with a fresh `/sys`, which hides bpffs at `/sys/fs/bpf`. Processes that pin
//! eBPF objects (the agent, the shim's DEL fallback) must enter the network namespace only.
use std::{
    fs::File,
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    path::Path,
    process::Command,
    time::Duration,
};

/// A command that starts inside the network namespace at `netns` (and nothing else changed).
pub fn command(netns: &Path, program: impl AsRef<std::ffi::OsStr>) -> io::Result<Command> {
    let fd: OwnedFd = File::open(netns)?.into();
    let mut cmd = Command::new(program);
    // SAFETY: setns(2) is async-signal-safe; the closure owns the descriptor it uses.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// Runs `f` on a thread inside the network namespace at `netns`.
pub fn run_in<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let file = File::open(netns)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain setns(2) on a descriptor that lives for the call; only this thread moves.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// `GET path` on `addr` from inside `netns`: the status code and the body.
pub fn http_get(netns: &Path, addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    run_in(netns, || -> io::Result<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no HTTP status in {head:?}")))?;
        Ok((status, body.to_owned()))
    })?
}

/// Peak and current resident set size of process `pid`, in KiB (`VmHWM`, `VmRSS`).
pub fn rss_kib(pid: u32) -> io::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| io::Error::other(format!("no {name} in /proc/{pid}/status")))
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

/// A TCP relay from a port on 127.0.0.1 inside a network namespace to an address reachable
/// from the test process: a process in the namespace (the agent) can then talk to a server on
/// the machine's loopback (the test API server) without any route out of the namespace. The
/// listening socket is made inside the namespace; the connections onward are made outside.
#[derive(Debug)]
pub struct Relay {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Listens on a free port of 127.0.0.1 inside `netns` and forwards to `target`.
    pub fn start(netns: &Path, target: SocketAddr) -> io::Result<Self> {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        };
        let listener = run_in(netns, || std::net::TcpListener::bind("127.0.0.1:0"))??;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("relay".to_owned())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((inner, _)) => {
                            let _ = inner.set_nonblocking(false);
                            if let Ok(outer) = TcpStream::connect(target) {
                                pipe(inner, outer);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })?;
        Ok(Self {
            port,
            stop,
            thread: Some(thread),
        })
    }

    /// The port on 127.0.0.1 inside the namespace.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Copies both ways between two connected streams, each direction on a thread of its own.
fn pipe(a: TcpStream, b: TcpStream) {
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
        copy(a, b2);
        copy(b, a2);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
