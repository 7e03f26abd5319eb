//! The `multus-cni` front end in thin mode: read the request, set up logging from the
//! configuration, run the engine in-process, print the reply. stdout carries only the reply.
//! A configuration of type `multus-shim` makes it the thick-mode shim instead (see [`shim`]).
pub mod logging;
pub mod shim;

use std::{
    io::{Read, Write},
    sync::Arc,
    time::Instant,
};

#[cfg(not(feature = "kube"))]
use crate::network::{PodInfo, PodKey, SourceError};
use crate::{
    cni::{CniVersion, code},
    config::NetConf,
    delegate::{CountingExec, Exec, ProcessExec},
    engine::Engine,
    front::{self, Call, Handler, Reply, Stdin},
    network::{LocalFiles, NetworkSource, source::NoSource},
};

/// The thin-mode engine for a configuration: with a cluster (`kubeconfig`, or the in-cluster
/// service account), pods and NADs come from the API server, devices from kubelet, and ADD
/// writes network-status and Events; otherwise the source is [`thin_source`].
pub fn thin_engine(conf: &NetConf) -> Engine {
    #[cfg(feature = "kube")]
    if let Some(engine) = crate::kube::thin_engine(conf) {
        return engine;
    }
    Engine::new(thin_source(conf))
}

/// The network source without a cluster: the local-files source when `localSourceDir` is set,
/// nothing otherwise. In a build without the `kube` feature, a configured `kubeconfig` makes
/// pod and network lookups fail clearly (DEL never needs them).
pub fn thin_source(conf: &NetConf) -> Arc<dyn NetworkSource> {
    #[cfg(not(feature = "kube"))]
    if let Some(kubeconfig) = &conf.kubeconfig {
        return Arc::new(NoKubernetes {
            kubeconfig: kubeconfig.display().to_string(),
        });
    }
    match &conf.local_source_dir {
        Some(dir) => Arc::new(LocalFiles::new(dir)),
        None => Arc::new(NoSource),
    }
}

#[cfg(not(feature = "kube"))]
struct NoKubernetes {
    kubeconfig: String,
}

#[cfg(not(feature = "kube"))]
impl NoKubernetes {
    fn error(&self, what: String) -> SourceError {
        SourceError::Invalid {
            what,
            reason: format!(
                "kubeconfig {} is set, but this multus-cni was built without Kubernetes support \
                 (feature `kube`)",
                self.kubeconfig
            ),
        }
    }
}

#[cfg(not(feature = "kube"))]
impl NetworkSource for NoKubernetes {
    fn pod(&self, pod: &PodKey) -> Result<Option<PodInfo>, SourceError> {
        Err(self.error(format!("pod {}/{}", pod.namespace, pod.name)))
    }

    fn network(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<crate::network::NetworkAttachmentDefinition>, SourceError> {
        Err(self.error(format!("network {namespace}/{name}")))
    }
}

/// Runs one CNI invocation: `env` gives the `CNI_*` variables, `stdin` the configuration; the
/// reply goes to `stdout`. A shim configuration goes to [`shim::run`]; any other goes through
/// [`front::serve`], where `make_engine` builds the engine for the parsed configuration. Plugins
/// always run as processes through a counter, so the final `timing` log line (verbose level)
/// says how much of the run was spent in delegates. Returns the exit status.
pub fn run<E, R, W, M>(env: E, mut stdin: R, mut stdout: W, make_engine: M) -> i32
where
    E: Fn(&str) -> Option<String>,
    R: Read,
    W: Write,
    M: Fn(&NetConf) -> Engine,
{
    let mut config = Vec::new();
    let reply = match stdin.read_to_end(&mut config) {
        Err(e) => Reply::error(
            CniVersion::LATEST.as_str(),
            code::IO_FAILURE,
            format!("reading stdin: {e}"),
        ),
        Ok(_) => {
            let stdin = Stdin::new(config);
            if stdin.is_shim() {
                shim::run(&env, stdin)
            } else {
                front::serve(&env, stdin, None, &Thin(make_engine))
            }
        }
    };
    if !reply.stdout.is_empty() {
        // Nothing else can be told to the runtime if stdout itself fails.
        let _ = writeln!(stdout, "{}", reply.stdout);
        let _ = stdout.flush();
    }
    reply.exit_code
}

/// Thin mode around the engine: logging from the configuration, the engine built for it, and
/// the timing line.
struct Thin<M>(M);

impl<M: Fn(&NetConf) -> Engine> Handler for Thin<M> {
    fn run(&self, call: &Call) -> Reply {
        logging::init(&call.conf);
        let started = Instant::now();
        let counter = Arc::new(CountingExec::new(ProcessExec));
        let engine = (self.0)(&call.conf).with_exec(Arc::clone(&counter) as Arc<dyn Exec>);
        let reply = engine.handle(&call.request, &call.conf);
        tracing::info!(
            command = %call.request.command,
            total_us = started.elapsed().as_micros(),
            delegate_us = counter.nanos() / 1000,
            delegate_runs = counter.calls(),
            "timing"
        );
        reply
    }

    fn unreadable(&self) {
        logging::init_fallback();
    }
}
