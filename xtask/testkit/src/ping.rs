//! `ping` from a test namespace, and its summary line read back: exactly `count` echo requests,
//! 10 ms apart unless set otherwise, each reply waited for at most one second.
use std::process::{Child, Command, Stdio};

use crate::{CmdError, netns::Netns};

/// One ping run; build it, then [`Ping::replies`], [`Ping::output`] or [`Ping::spawn`].
#[derive(Debug, Clone)]
pub struct Ping<'a> {
    netns: &'a Netns,
    dst: String,
    count: u32,
    interval: &'static str,
    source: Option<String>,
}

impl<'a> Ping<'a> {
    /// `count` pings from `netns` to `dst`.
    pub fn new(netns: &'a Netns, dst: &impl ToString, count: u32) -> Self {
        Self {
            netns,
            dst: dst.to_string(),
            count,
            interval: "0.01",
            source: None,
        }
    }

    /// Seconds between requests (ping's `-i`; below 0.002 needs root).
    #[must_use]
    pub fn interval(mut self, seconds: &'static str) -> Self {
        self.interval = seconds;
        self
    }

    /// Sends from source address `src` (ping's `-I`).
    #[must_use]
    pub fn source(mut self, src: &impl ToString) -> Self {
        self.source = Some(src.to_string());
        self
    }

    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["-n", "-q", "-c", &self.count.to_string(), "-i"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.extend([self.interval.to_owned(), "-W".to_owned(), "1".to_owned()]);
        if let Some(src) = &self.source {
            args.extend(["-I".to_owned(), src.clone()]);
        }
        args.push(self.dst.clone());
        args
    }

    /// Runs it to the end; ping's output (an error when not every request was answered).
    pub fn output(&self) -> Result<String, CmdError> {
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.netns.exec("ping", &args)
    }

    /// Runs it to the end and returns how many replies came back.
    pub fn replies(&self) -> u32 {
        let out = self.output().unwrap_or_else(|e| e.to_string());
        summary(&out).map_or(0, |(_, received)| received)
    }

    /// Starts it in the background, stdout and stderr piped (read them with
    /// `wait_with_output` and [`summary`]).
    pub fn spawn(&self) -> std::io::Result<Child> {
        Command::new("ip")
            .args(["netns", "exec", self.netns.name(), "ping"])
            .args(self.args())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    }
}

/// Requests sent and replies received, from ping's summary line
/// ("5 packets transmitted, 5 received, 0% packet loss"); `None` without one.
pub fn summary(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut parts = line.split(',');
    let mut first_number =
        || -> Option<u32> { parts.next()?.split_whitespace().next()?.parse().ok() };
    let sent = first_number()?;
    let received = first_number()?;
    Some((sent, received))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn parses_ping_summary() {
        let out = "PING 192.0.2.11 (192.0.2.11) 56(84) bytes of data.\n\n\
                   --- 192.0.2.11 ping statistics ---\n\
                   5 packets transmitted, 3 received, 40% packet loss, time 41ms\n";
        assert_eq!(summary(out), Some((5, 3)));
        assert_eq!(summary("connect: Network is unreachable\n"), None);
    }
}
