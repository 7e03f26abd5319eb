//! The runtime's request: the `CNI_*` environment and the configuration on stdin.
use std::{fmt, path::PathBuf};

use thiserror::Error;

use super::args::{ArgsError, CniArgs};

/// The CNI operation asked for in `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Attach the container to the networks.
    Add,
    /// Detach it.
    Del,
    /// Verify the attachments.
    Check,
    /// Report whether the plugin is ready for ADD.
    Status,
    /// Remove attachments the runtime no longer knows.
    Gc,
    /// Report the supported spec versions.
    Version,
}

impl Command {
    /// Parses the value of `CNI_COMMAND`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            "VERSION" => Self::Version,
            _ => return None,
        })
    }

    /// The `CNI_COMMAND` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Status => "STATUS",
            Self::Gc => "GC",
            Self::Version => "VERSION",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A missing or invalid `CNI_*` variable (error code 4).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvError {
    /// A variable the command needs is not set or empty.
    #[error("{var} is required for {command} but not set")]
    Missing {
        /// The variable.
        var: &'static str,
        /// The command.
        command: &'static str,
    },
    /// A variable has a value the spec does not allow.
    #[error("{var}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// `CNI_ARGS` could not be parsed.
    #[error(transparent)]
    Args(#[from] ArgsError),
}

/// One runtime request: the parsed environment plus the raw configuration from stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for VERSION, STATUS and GC).
    pub container_id: String,
    /// `CNI_NETNS`, when given.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (empty for VERSION, STATUS and GC).
    pub ifname: String,
    /// `CNI_ARGS`, parsed.
    pub args: CniArgs,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<PathBuf>,
    /// The network configuration bytes from stdin.
    pub config: Vec<u8>,
}

impl Request {
    /// Reads the request from `env` (usually `std::env::var`) and `config` (stdin), checking what
    /// the command needs: ADD and CHECK need a container id, netns and ifname; DEL needs the
    /// container id and ifname (the netns may already be gone).
    pub fn from_env<F>(env: F, config: Vec<u8>) -> Result<Self, EnvError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let get = |var: &str| env(var).filter(|v| !v.is_empty());
        let raw_command = get("CNI_COMMAND").ok_or(EnvError::Missing {
            var: "CNI_COMMAND",
            command: "any command",
        })?;
        let command = Command::parse(&raw_command).ok_or_else(|| EnvError::Invalid {
            var: "CNI_COMMAND",
            value: raw_command.clone(),
            reason: "not one of ADD, DEL, CHECK, STATUS, GC, VERSION",
        })?;
        let needs_container = matches!(command, Command::Add | Command::Del | Command::Check);
        let needs_netns = matches!(command, Command::Add | Command::Check);
        let required = |var: &'static str, needed: bool| -> Result<String, EnvError> {
            match get(var) {
                Some(v) => Ok(v),
                None if needed => Err(EnvError::Missing {
                    var,
                    command: command.as_str(),
                }),
                None => Ok(String::new()),
            }
        };
        let container_id = required("CNI_CONTAINERID", needs_container)?;
        if needs_container {
            validate_container_id(&container_id)?;
        }
        let netns = required("CNI_NETNS", needs_netns)?;
        let ifname = required("CNI_IFNAME", needs_container)?;
        if needs_container {
            validate_ifname(&ifname).map_err(|reason| EnvError::Invalid {
                var: "CNI_IFNAME",
                value: ifname.clone(),
                reason,
            })?;
        }
        let args = match CniArgs::parse(&get("CNI_ARGS").unwrap_or_default()) {
            Ok(args) => args,
            // DEL uses the CNI_ARGS cached at ADD time: odd ones must not block a teardown.
            Err(_) if command == Command::Del => CniArgs::default(),
            Err(e) => return Err(e.into()),
        };
        let path = get("CNI_PATH")
            .map(|p| split_path_list(&p))
            .unwrap_or_default();
        Ok(Self {
            command,
            container_id,
            netns: (!netns.is_empty()).then(|| PathBuf::from(netns)),
            ifname,
            args,
            path,
            config,
        })
    }
}

/// A `:`-separated directory list (`CNI_PATH`, `binDir`), empty entries dropped.
pub fn split_path_list(list: &str) -> Vec<PathBuf> {
    list.split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// The spec's container id rule: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`. It also keeps the id safe to
/// use as a cache file name.
fn validate_container_id(id: &str) -> Result<(), EnvError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && id.len() <= 1024 {
        Ok(())
    } else {
        Err(EnvError::Invalid {
            var: "CNI_CONTAINERID",
            value: id.to_owned(),
            reason: "must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (at most 1024 characters)",
        })
    }
}

/// Checks a Linux interface name: 1 to 15 bytes, not `.` or `..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("interface name is empty");
    }
    if name.len() > 15 {
        return Err("interface name is longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("interface name cannot be . or ..");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err("interface name contains /, :, whitespace or a control character");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn add_needs_everything() {
        let full = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/a:/b"),
            ("CNI_ARGS", "K8S_POD_NAME=p;K8S_POD_NAMESPACE=n"),
        ];
        let r = Request::from_env(env(&full), vec![]).unwrap();
        assert_eq!(r.command, Command::Add);
        assert_eq!(r.path, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(r.args.pod(), Some(("n", "p")));
        for missing in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let partial: Vec<_> = full
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            assert_eq!(
                Request::from_env(env(&partial), vec![]),
                Err(EnvError::Missing {
                    var: missing,
                    command: "ADD"
                })
            );
        }
    }

    #[test]
    fn del_without_netns_and_version_without_anything() {
        let r = Request::from_env(
            env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0"),
            ]),
            vec![],
        )
        .unwrap();
        assert_eq!(r.netns, None);
        let v = Request::from_env(env(&[("CNI_COMMAND", "VERSION")]), vec![]).unwrap();
        assert_eq!(v.command, Command::Version);
    }

    #[test]
    fn rejects_hostile_values() {
        let base = |cid: &str, ifname: &str| {
            Request::from_env(
                env(&[
                    ("CNI_COMMAND", "DEL"),
                    ("CNI_CONTAINERID", cid),
                    ("CNI_IFNAME", ifname),
                ]),
                vec![],
            )
        };
        assert!(base("../../etc/passwd", "eth0").is_err());
        assert!(base(".hidden", "eth0").is_err());
        assert!(base("ok", "averyveryverylongname").is_err());
        assert!(base("ok", "a/b").is_err());
        assert!(base("ok", "..").is_err());
        assert!(base("ok", "eth0").is_ok());
        let del_with_odd_args = Request::from_env(
            env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", "garbage"),
            ]),
            vec![],
        );
        assert_eq!(del_with_odd_args.unwrap().args, CniArgs::default());
        assert!(matches!(
            Request::from_env(env(&[("CNI_COMMAND", "ATTACH")]), vec![]),
            Err(EnvError::Invalid { .. })
        ));
        assert!(Request::from_env(env(&[]), vec![]).is_err());
    }
}
