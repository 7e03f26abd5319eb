//! The agent's `logFile` (a Multus daemon key): the log goes to the file, rotated by size with
//! `logOptions`, and with `logToStderr: false` nowhere else.
use multus_testkit::require_root;

use crate::support::Node;

#[test]
fn log_file_gets_the_log_and_stderr_stays_quiet() {
    if !require_root("log_file_gets_the_log_and_stderr_stays_quiet") {
        return;
    }
    let node = Node::new();
    let file = node.path("logs").join("agent.log");
    // An old file at the size limit is rotated when the agent opens it.
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, vec![b'#'; 1024 * 1024]).unwrap();
    let mut config = node.agent_config();
    config["logFile"] = file.to_str().unwrap().into();
    config["logToStderr"] = false.into();
    config["logOptions"] = serde_json::json!({"maxSize": 1, "maxBackups": 1});
    let mut agent = node.start_agent(&config);
    assert!(agent.terminate(), "the agent did not stop cleanly");

    let log = std::fs::read_to_string(&file).unwrap();
    for line in [
        "dataplane loaded",
        "serving CNI requests",
        "SIGTERM: shutting down",
    ] {
        assert!(
            log.contains(line),
            "no {line:?} in {}:\n{log}",
            file.display()
        );
    }
    let old = std::fs::read(file.with_extension("log.1")).unwrap();
    assert_eq!(old.len(), 1024 * 1024, "the full file became agent.log.1");
    // The container's stdout and stderr got nothing.
    let console = agent.log_text();
    assert!(console.trim().is_empty(), "{console}");
}
