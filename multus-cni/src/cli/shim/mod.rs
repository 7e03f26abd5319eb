//! Thick mode's CNI binary: with `"type": "multus-shim"` in its configuration, `multus-cni`
//! forwards the invocation (the `CNI_*` environment and the exact stdin bytes) to `multus-agent`
//! over its unix socket and prints the agent's answer unchanged.
//!
//! When the agent cannot be reached, ADD fails with code 11 (try again later; the runtime
//! retries), DEL runs the engine in this process from the disk cache (see [`fallback`]), STATUS
//! fails with code 50 (not available) and CHECK and GC with code 11. VERSION is answered here.
//!
//! Configuration keys: `daemonSocketDir` (Multus's key, default `/run/multus`), `cniDir` and
//! `binDir` (used by the DEL fallback; they must match the agent's), `bpffsDir` and
//! `dataplaneStateDir` (where the agent pins, for the fallback), and the logging keys.
mod client;
pub(crate) mod fallback;

use std::{path::PathBuf, time::Duration};

use serde_json::{Map, Value};

use self::{
    client::{SendError, send},
    fallback::FallbackDel,
};
use super::logging;
use crate::{
    cni::{Command, code},
    config::NetConf,
    front::{self, Reply, Stdin},
    thick::{self, PinLayout},
};

/// How long the shim waits for the agent's answer. ADD may queue behind other requests in the
/// agent and runs every delegate; runtimes give a whole sandbox set-up a few minutes.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(240);

/// The shim's own settings, from its configuration.
#[derive(Debug, Clone)]
struct ShimConf {
    socket: PathBuf,
    dataplane: PinLayout,
}

impl ShimConf {
    /// Reads the shim's own keys; a key of the wrong type, or a relative path, is an error
    /// naming it (code 7), as for every other key.
    fn from_object(obj: &Map<String, Value>) -> crate::Result<Self> {
        let dir = |key: &str, default: &str| -> crate::Result<PathBuf> {
            let path = match obj.get(key) {
                None | Some(Value::Null) => PathBuf::from(default),
                Some(Value::String(s)) if s.is_empty() => PathBuf::from(default),
                Some(Value::String(s)) => PathBuf::from(s),
                Some(other) => {
                    return Err(crate::Error::config(
                        key,
                        format!("expected a string (a path), got {other}"),
                    ));
                }
            };
            if path.is_absolute() {
                Ok(path)
            } else {
                Err(crate::Error::config(key, "must be an absolute path"))
            }
        };
        Ok(Self {
            socket: thick::socket_path(&dir("daemonSocketDir", thick::DEFAULT_SOCKET_DIR)?),
            dataplane: PinLayout::new(
                dir("bpffsDir", thick::DEFAULT_BPFFS_DIR)?,
                dir("dataplaneStateDir", thick::DEFAULT_DATAPLANE_STATE_DIR)?,
            ),
        })
    }
}

/// What the shim merges into its configuration before parsing it as a [`NetConf`] (for logging
/// and the DEL fallback): a shim configuration need not name the cluster network (the agent
/// knows it), and DEL reads only the cache, so a placeholder satisfies the parser.
fn placeholder(obj: &Map<String, Value>) -> Option<Map<String, Value>> {
    let set = |key: &str| obj.get(key).is_some_and(|v| !v.is_null());
    if set("clusterNetwork") || set("delegates") {
        return None;
    }
    let mut merge = Map::new();
    merge.insert(
        "clusterNetwork".to_owned(),
        Value::String("multus-agent".to_owned()),
    );
    Some(merge)
}

/// The shim configuration as a [`NetConf`], with the [`placeholder`] merged in.
fn netconf(obj: &Map<String, Value>) -> crate::Result<NetConf> {
    match placeholder(obj) {
        None => NetConf::from_object(obj),
        Some(merge) => {
            let mut obj = obj.clone();
            obj.extend(merge);
            NetConf::from_object(&obj)
        }
    }
}

/// Handles one invocation in shim mode; `stdin` is the runtime's (a shim configuration).
pub fn run<E>(env: &E, stdin: Stdin) -> Reply
where
    E: Fn(&str) -> Option<String>,
{
    let Ok(obj) = stdin.object() else {
        return stdin.error(
            code::DECODING_FAILURE,
            "the shim configuration is not a JSON object",
        );
    };
    let parsed = netconf(obj).and_then(|c| ShimConf::from_object(obj).map(|s| (c, s)));
    let (conf, shim) = match parsed {
        Ok(both) => both,
        Err(e) => {
            logging::init_fallback();
            tracing::error!("{e}");
            return stdin.error(e.code(), e.to_string());
        }
    };
    logging::init(&conf);
    let command = env("CNI_COMMAND").unwrap_or_default();
    if command == Command::Version.as_str() {
        return Reply::version();
    }
    let mut headers = Vec::new();
    for var in thick::ENV_VARS {
        if let Some(value) = env(var) {
            if !thick::is_header_safe(&value) {
                return stdin.error(
                    code::INVALID_ENV,
                    format!("{var} holds characters the shim cannot forward: {value:?}"),
                );
            }
            headers.push((var, value));
        }
    }
    let outcome = send(&shim.socket, &headers, stdin.bytes(), ANSWER_TIMEOUT);
    let socket = shim.socket.display();
    let failed = |what: String| {
        tracing::error!(%command, "{what}");
        let code = if command == Command::Status.as_str() {
            code::NOT_AVAILABLE
        } else {
            code::TRY_AGAIN_LATER
        };
        stdin.error(code, what)
    };
    match outcome {
        Ok(answer) => match answer.exit_code {
            Some(exit_code) => Reply {
                stdout: answer.body,
                exit_code,
            },
            None => failed(format!(
                "unexpected answer from {socket}: HTTP {}: {}",
                answer.status,
                answer.body.trim()
            )),
        },
        // The agent never saw the request, or died while handling it: DEL must still happen.
        Err(SendError::Unreachable(_) | SendError::Dropped(_))
            if command == Command::Del.as_str() =>
        {
            let merge = placeholder(obj);
            front::serve(env, stdin, merge.as_ref(), &FallbackDel(shim.dataplane))
        }
        Err(SendError::Unreachable(e)) => failed(format!(
            "multus-agent is not reachable at {socket} ({e}); try again later"
        )),
        Err(SendError::Dropped(e)) => failed(format!(
            "the connection to multus-agent at {socket} broke before it answered ({e}); try \
             again later"
        )),
        Err(SendError::TimedOut(t)) => failed(format!(
            "multus-agent at {socket} did not answer within {t:?}; try again later"
        )),
        Err(SendError::BadAnswer(e)) => failed(format!("unexpected answer from {socket}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(o) => o,
            _ => unreachable!(),
        }
    }

    #[test]
    fn settings_and_netconf_from_a_multus_style_shim_config() {
        let o = obj(serde_json::json!({
            "cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus-shim",
            "daemonSocketDir": "/run/x", "logLevel": "verbose"
        }));
        let shim = ShimConf::from_object(&o).unwrap();
        assert_eq!(shim.socket, PathBuf::from("/run/x/multus.sock"));
        assert_eq!(shim.dataplane, PinLayout::default());
        let conf = netconf(&o).unwrap();
        assert_eq!(conf.cni_dir, PathBuf::from("/var/lib/cni/multus"));
        assert_eq!(conf.plugin_type, "multus-shim");
    }

    #[test]
    fn shim_keys_are_type_checked() {
        for (key, value) in [
            ("daemonSocketDir", serde_json::json!(5)),
            ("bpffsDir", serde_json::json!(["/x"])),
            ("dataplaneStateDir", serde_json::json!("relative/dir")),
        ] {
            let mut v = serde_json::json!({
                "cniVersion": "1.0.0", "name": "n", "type": "multus-shim", "logToStderr": false,
            });
            v[key] = value;
            let err = ShimConf::from_object(&obj(v.clone())).unwrap_err();
            assert_eq!(err.code(), 7, "{key}: {err}");
            assert!(err.to_string().contains(&format!("{key}:")), "{err}");
            // The whole invocation answers with it, whatever the command.
            let reply = run(
                &|k: &str| (k == "CNI_COMMAND").then(|| "DEL".to_owned()),
                Stdin::new(v.to_string().into_bytes()),
            );
            assert_eq!(reply.exit_code, 1);
            assert!(reply.stdout.contains(key), "{}", reply.stdout);
        }
    }

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn unreachable_agent_gives_the_right_codes() {
        let dir = tempfile::tempdir().unwrap();
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "n", "type": "multus-shim",
            "daemonSocketDir": dir.path(), "cniDir": dir.path().join("cache"),
            "logToStderr": false,
        })
        .to_string()
        .into_bytes();
        let reply = |env: &dyn Fn(&str) -> Option<String>| {
            let r = run(&env, Stdin::new(conf.clone()));
            let v: Value = serde_json::from_str(&r.stdout).unwrap_or(Value::Null);
            (r.exit_code, v["code"].as_u64())
        };
        let add = env_of(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ]);
        assert_eq!(reply(&add), (1, Some(11)));
        assert_eq!(reply(&env_of(&[("CNI_COMMAND", "STATUS")])), (1, Some(50)));
        assert_eq!(reply(&env_of(&[("CNI_COMMAND", "GC")])), (1, Some(11)));
        // DEL with nothing cached succeeds in-process.
        let del = env_of(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ]);
        assert_eq!(reply(&del), (0, None));
        let version = run(
            &env_of(&[("CNI_COMMAND", "VERSION")]),
            Stdin::new(conf.clone()),
        );
        assert!(version.stdout.contains("supportedVersions"));
        let bad = env_of(&[("CNI_COMMAND", "ADD"), ("CNI_ARGS", "a=b\nc")]);
        assert_eq!(reply(&bad), (1, Some(4)));
    }
}
