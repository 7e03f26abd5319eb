//! The request/reply front end, once: how one CNI invocation (the `CNI_*` environment and the
//! runtime's stdin) becomes the reply printed on stdout. The thin binary, the shim's DEL
//! fallback and the agent all enter through [`serve`], so they read requests, answer VERSION and
//! shape error replies the same way.
use serde_json::{Map, Value};
use tracing::error;

use crate::{
    cni::{CniVersion, Command, ErrorReply, Request, version::version_reply},
    config::{NetConf, SHIM_TYPE},
    error::Error,
};

/// What to print and how to exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Everything for stdout (the result, the VERSION reply, or the error JSON); may be empty.
    pub stdout: String,
    /// The process exit status: 0 on success, 1 on error.
    pub exit_code: i32,
}

impl Reply {
    /// Success, printing `stdout` (empty for DEL, CHECK, STATUS and GC).
    pub fn success(stdout: impl Into<String>) -> Self {
        Self {
            stdout: stdout.into(),
            exit_code: 0,
        }
    }

    /// VERSION's answer: every spec version this plugin speaks.
    pub fn version() -> Self {
        Self::success(version_reply().to_string())
    }

    /// The spec's error reply in `cni_version` (exit status 1).
    pub fn error(cni_version: &str, code: u32, msg: impl Into<String>) -> Self {
        Self {
            stdout: ErrorReply::new(cni_version, code, msg).to_json(),
            exit_code: 1,
        }
    }

    /// The error reply for `e` in `cni_version`, logged with the command it ended.
    pub fn failed(cni_version: &str, command: Option<Command>, e: &Error) -> Self {
        match command {
            Some(command) => error!(%command, code = e.code(), "{e}"),
            None => error!(code = e.code(), "{e}"),
        }
        Self::error(cni_version, e.code(), e.to_string())
    }
}

/// The runtime's stdin, parsed as JSON once; every later look at the configuration (is it a
/// shim's, which version do errors answer in, the configuration itself) reads this.
#[derive(Debug, Clone)]
pub struct Stdin {
    bytes: Vec<u8>,
    object: Result<Map<String, Value>, String>,
    reply_version: &'static str,
}

impl Stdin {
    /// Parses `bytes`; a configuration that is not a JSON object is kept, to be reported when
    /// (and if) the command needs it.
    pub fn new(bytes: Vec<u8>) -> Self {
        let object = match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(obj)) => Ok(obj),
            Ok(_) => Err("expected a JSON object".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        // Errors answer in the configuration's version when it is one we speak, else the newest.
        let reply_version = object
            .as_ref()
            .ok()
            .and_then(|o| o.get("cniVersion"))
            .and_then(Value::as_str)
            .and_then(CniVersion::parse)
            .unwrap_or(CniVersion::LATEST)
            .as_str();
        Self {
            bytes,
            object,
            reply_version,
        }
    }

    /// The bytes as the runtime sent them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The configuration object, or the decoding error naming what is wrong with it.
    pub fn object(&self) -> Result<&Map<String, Value>, Error> {
        self.object
            .as_ref()
            .map_err(|reason| Error::decode("the network configuration", reason))
    }

    /// The spec version error replies answer in: the configuration's, when supported, else the
    /// newest.
    pub fn reply_version(&self) -> &'static str {
        self.reply_version
    }

    /// An error reply in [`Stdin::reply_version`].
    pub fn error(&self, code: u32, msg: impl Into<String>) -> Reply {
        Reply::error(self.reply_version, code, msg)
    }

    /// Whether this is a thick-mode shim configuration (`"type": "multus-shim"`).
    pub fn is_shim(&self) -> bool {
        self.object
            .as_ref()
            .is_ok_and(|o| o.get("type").and_then(Value::as_str) == Some(SHIM_TYPE))
    }
}

/// One invocation that is left to run: the request and its parsed configuration.
#[derive(Debug, Clone)]
pub struct Call {
    /// The runtime's request (its `config` holds stdin's bytes).
    pub request: Request,
    /// The configuration, with the embedder's keys merged in.
    pub conf: NetConf,
}

/// What a front end does around the engine.
pub trait Handler {
    /// Runs `call` (any command but VERSION) and says what to answer.
    fn run(&self, call: &Call) -> Reply;

    /// Called before an invocation that cannot run is answered with an error (the thin binary
    /// sets up its fallback logging here, having no configuration to take it from).
    fn unreadable(&self) {}
}

/// The one entry point: reads the request from `env` and `stdin`, answers VERSION, merges
/// `merge` (the agent's keys, which win over the runtime's) into the configuration, parses it
/// and hands the call to `handler`. Every failure on the way is the spec's error reply, in the
/// configuration's version when it declares one. Never panics, never fails.
pub fn serve<E>(
    env: &E,
    stdin: Stdin,
    merge: Option<&Map<String, Value>>,
    handler: &dyn Handler,
) -> Reply
where
    E: Fn(&str) -> Option<String>,
{
    let Stdin {
        bytes,
        object,
        reply_version,
    } = stdin;
    let request = match Request::from_env(env, bytes) {
        Ok(request) => request,
        Err(e) => {
            handler.unreadable();
            return Reply::failed(reply_version, None, &Error::from(e));
        }
    };
    if request.command == Command::Version {
        return Reply::version();
    }
    let conf = object
        .map_err(|reason| Error::decode("the network configuration", reason))
        .and_then(|mut obj| {
            for (key, value) in merge.into_iter().flatten() {
                obj.insert(key.clone(), value.clone());
            }
            NetConf::from_object(&obj)
        });
    match conf {
        Ok(conf) => handler.run(&Call { request, conf }),
        Err(e) => {
            handler.unreadable();
            Reply::failed(reply_version, Some(request.command), &e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_is_read_once_for_every_question() {
        let shim = Stdin::new(br#"{"type":"multus-shim","cniVersion":"0.3.1"}"#.to_vec());
        assert!(shim.is_shim());
        assert_eq!(shim.reply_version(), "0.3.1");
        assert_eq!(
            shim.error(11, "later").stdout,
            r#"{"cniVersion":"0.3.1","code":11,"msg":"later"}"#
        );
        assert!(!Stdin::new(br#"{"type":"multus"}"#.to_vec()).is_shim());
        let junk = Stdin::new(b"not json".to_vec());
        assert!(!junk.is_shim());
        assert_eq!(junk.reply_version(), CniVersion::LATEST.as_str());
        assert_eq!(junk.object().unwrap_err().code(), 6);
        let array = Stdin::new(b"[1]".to_vec());
        assert!(
            array
                .object()
                .unwrap_err()
                .to_string()
                .contains("JSON object")
        );
        let unknown = Stdin::new(br#"{"cniVersion":"9.9.9"}"#.to_vec());
        assert_eq!(unknown.reply_version(), CniVersion::LATEST.as_str());
    }

    struct Echo;

    impl Handler for Echo {
        fn run(&self, call: &Call) -> Reply {
            Reply::success(format!(
                "{} {}",
                call.conf.cluster_network.as_deref().unwrap_or_default(),
                call.conf.cni_dir.display()
            ))
        }
    }

    fn env(command: &'static str) -> impl Fn(&str) -> Option<String> {
        move |k: &str| match k {
            "CNI_COMMAND" => Some(command.to_owned()),
            _ => None,
        }
    }

    #[test]
    fn version_errors_and_merged_keys() {
        let conf = br#"{"cniVersion":"0.4.0","name":"n","type":"multus","clusterNetwork":"a","cniDir":"/x"}"#;
        let version = serve(&env("VERSION"), Stdin::new(b"junk".to_vec()), None, &Echo);
        assert_eq!(version, Reply::version());
        let bad_env = serve(&env("ATTACH"), Stdin::new(conf.to_vec()), None, &Echo);
        assert_eq!(bad_env.exit_code, 1);
        assert!(
            bad_env
                .stdout
                .starts_with(r#"{"cniVersion":"0.4.0","code":4,"#)
        );
        let junk = serve(&env("STATUS"), Stdin::new(b"junk".to_vec()), None, &Echo);
        assert!(
            junk.stdout
                .starts_with(r#"{"cniVersion":"1.1.0","code":6,"#),
            "{junk:?}"
        );
        let plain = serve(&env("STATUS"), Stdin::new(conf.to_vec()), None, &Echo);
        assert_eq!(plain, Reply::success("a /x"));
        let merge = serde_json::json!({"clusterNetwork": "b", "cniDir": "/y"});
        let merged = serve(
            &env("STATUS"),
            Stdin::new(conf.to_vec()),
            merge.as_object(),
            &Echo,
        );
        assert_eq!(merged, Reply::success("b /y"));
    }
}
