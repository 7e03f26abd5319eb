//! One front end: VERSION and malformed configurations get the same answer, byte for byte,
//! from the thin binary, from the shim with no agent behind it, and from the agent's socket.
use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
};

use multus_testkit::{inside, require_root};
use serde_json::{Value, json};

use super::support::{Node, Run, multus_cni_binary};

/// `POST /cni` on the agent's socket with `env` as headers and `stdin` as body; the answer as
/// the shim would print it (body trimmed) and exit.
fn post(socket: &Path, env: &[(&str, &str)], stdin: &[u8]) -> (i32, String) {
    let mut stream = UnixStream::connect(socket).unwrap();
    let mut head = format!(
        "POST /cni HTTP/1.1\r\nHost: multus-agent\r\nConnection: close\r\nContent-Length: {}\r\n",
        stdin.len()
    );
    for (name, value) in env {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(stdin).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (headers, body) = answer.split_once("\r\n\r\n").unwrap();
    let exit = headers
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("cni-exit-code:")
                .map(|v| v.trim().parse::<i32>().unwrap())
        })
        .unwrap_or_else(|| panic!("no exit code in {headers:?}"));
    (exit, body.trim().to_owned())
}

/// The runtime's stdin for a case: `conf` with `type` set, or raw bytes for a non-object.
fn stdin(conf: &Value, plugin_type: &str, socket_dir: &Path) -> Vec<u8> {
    match conf {
        Value::Object(o) => {
            let mut o = o.clone();
            o.insert("type".into(), plugin_type.into());
            o.insert("logToStderr".into(), false.into());
            if plugin_type == "multus-shim" {
                o.insert("daemonSocketDir".into(), json!(socket_dir));
            }
            Value::Object(o).to_string().into_bytes()
        }
        Value::String(raw) => raw.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

#[test]
fn version_and_malformed_input_answer_alike_through_every_front_end() {
    if !require_root("version_and_malformed_input_answer_alike_through_every_front_end") {
        return;
    }
    let node = Node::new();
    let _agent = node.start_agent(&node.agent_config());
    let socket = node.path("run").join("multus.sock");
    // A socket directory nobody serves: the shim's own answers.
    let nobody = node.path("nobody");
    std::fs::create_dir_all(&nobody).unwrap();
    let del = [
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "c-front"),
        ("CNI_IFNAME", "eth0"),
    ];
    let add = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c-front"),
        ("CNI_NETNS", "/var/run/netns/none"),
        ("CNI_IFNAME", "eth0"),
    ];
    let version = [("CNI_COMMAND", "VERSION")];
    // (what, environment, configuration, the error code; `None`: VERSION's answer)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Value, Option<u64>);
    let cases: Vec<Case<'_>> = vec![
        (
            "VERSION",
            &version,
            json!({"cniVersion": "0.4.0", "name": "n"}),
            None,
        ),
        ("VERSION, junk stdin", &version, json!("{junk"), None),
        ("no name", &add, json!({"cniVersion": "0.4.0"}), Some(7)),
        (
            "unsupported version",
            &del,
            json!({"cniVersion": "9.9.9", "name": "n"}),
            Some(1),
        ),
        (
            "truncated JSON",
            &del,
            json!("{\"cniVersion\": \"0.3.1\", "),
            Some(6),
        ),
        ("not an object", &add, json!([1, 2]), Some(6)),
    ];
    for (what, env, conf, code) in cases {
        let thin = Run::invoke(
            inside::command(&node.netns.path(), multus_cni_binary()).unwrap(),
            env,
            &stdin(&conf, "multus", &nobody),
        );
        let shim = Run::invoke(
            inside::command(&node.netns.path(), multus_cni_binary()).unwrap(),
            env,
            &stdin(&conf, "multus-shim", &nobody),
        );
        let agent = post(&socket, env, &stdin(&conf, "multus", &nobody));
        assert_eq!(
            (thin.code, thin.stdout.as_str()),
            (shim.code, shim.stdout.as_str()),
            "{what}: thin vs shim without agent ({})",
            shim.stderr
        );
        assert_eq!(
            (thin.code, thin.stdout.clone()),
            agent,
            "{what}: thin vs agent"
        );
        let reply: Value = serde_json::from_str(&thin.stdout).unwrap();
        match code {
            None => {
                assert_eq!(thin.code, 0, "{what}");
                assert!(reply["supportedVersions"].is_array(), "{what}: {reply}");
            }
            Some(code) => {
                assert_eq!(thin.code, 1, "{what}");
                assert_eq!(reply["code"], code, "{what}: {reply}");
            }
        }
    }
}
