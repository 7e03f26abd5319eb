//! The agent's [`Publisher`]: it counts the DELs the engine gave up (a bounded
//! `retryDeleteOnError`, `multus_agent_abandoned_deletes_total`) and hands every notification on
//! to an inner publisher, the place for thick mode's Kubernetes Events (network-status is
//! written by the CNI handler itself).
use std::sync::Arc;

use multus_cni::{
    cni::Request,
    engine::{AbandonedDel, AddOutput, Publisher},
};

use crate::metrics::AgentMetrics;

/// Counts given-up DELs, then passes everything to `events`.
pub struct AgentPublisher {
    metrics: AgentMetrics,
    events: Arc<dyn Publisher>,
}

impl AgentPublisher {
    /// A publisher counting into `metrics` and forwarding to `events` (the thick-mode Events
    /// publisher; [`multus_cni::engine::NoPublisher`] while there is none).
    pub fn new(metrics: AgentMetrics, events: Arc<dyn Publisher>) -> Self {
        Self { metrics, events }
    }
}

impl Publisher for AgentPublisher {
    fn added(&self, request: &Request, output: &AddOutput) {
        self.events.added(request, output);
    }

    fn add_failed(&self, request: &Request, error: &multus_cni::Error) {
        self.events.add_failed(request, error);
    }

    fn del_abandoned(&self, abandoned: &AbandonedDel) {
        self.metrics.abandoned_delete();
        self.events.del_abandoned(abandoned);
    }
}
