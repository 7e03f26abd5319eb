//! The agent's [`Publisher`]: it counts the DELs the engine gave up (a bounded
//! `retryDeleteOnError`, `multus_agent_abandoned_deletes_total`) and hands every notification on
//! to an inner publisher: the same Kubernetes publisher as thin mode (network-status and Events),
//! or one that logs in standalone mode.
use std::sync::Arc;

use multus_cni::{
    NetConf,
    cni::Request,
    engine::{AbandonedDel, AddOutput, Publisher},
    network::PodKey,
};

use crate::metrics::AgentMetrics;

/// Counts given-up DELs, then passes everything to `events`.
pub struct AgentPublisher {
    metrics: AgentMetrics,
    events: Arc<dyn Publisher>,
}

impl AgentPublisher {
    /// A publisher counting into `metrics` and forwarding to `events`.
    pub fn new(metrics: AgentMetrics, events: Arc<dyn Publisher>) -> Self {
        Self { metrics, events }
    }
}

impl Publisher for AgentPublisher {
    fn added(&self, request: &Request, conf: &NetConf, output: &AddOutput) {
        self.events.added(request, conf, output);
    }

    fn add_failed(&self, request: &Request, error: &multus_cni::Error) {
        self.events.add_failed(request, error);
    }

    fn del_abandoned(&self, abandoned: &AbandonedDel) {
        self.metrics.abandoned_delete();
        self.events.del_abandoned(abandoned);
    }

    fn warning(&self, pod: &PodKey, reason: &'static str, message: &str) {
        self.events.warning(pod, reason, message);
    }
}
