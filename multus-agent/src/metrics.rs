//! The agent's own metrics: [`AgentMetrics`], the counters every part of the agent updates,
//! and the build info; [`crate::scrape`] serves them on `/metrics` with the per-interface
//! counters.
use std::{sync::atomic::AtomicI64, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        MetricType,
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::{Registry, Unit},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    command: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    // 1 ms to about 65 s: a CNI ADD with slow delegates can take many seconds.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The agent's own counters; cheap to clone, all clones count into the same series.
#[derive(Clone, Debug)]
pub struct AgentMetrics {
    attach_ops: Family<OperationLabels, Counter>,
    errors: Family<ComponentLabels, Counter>,
    requests: HistogramFamily<RequestLabels>,
    attach_duration: Histogram,
    status_writes: Family<ResultLabels, Counter>,
    in_flight: Gauge,
    ready: Gauge,
    cache_synced: Family<CacheLabels, Gauge>,
    source_events: Family<CacheLabels, Counter>,
    policy_errors: Family<KindLabels, Counter>,
    policy_updates: Family<OperationLabels, Counter>,
    policy_sync: Histogram,
    abandoned_deletes: Counter,
    drop_events: Counter,
    drop_events_suppressed: Counter,
    drop_events_lost: Counter,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self {
            attach_ops: Family::default(),
            errors: Family::default(),
            requests: Family::new_with_constructor(request_histogram),
            // 50 us to about 3 s.
            attach_duration: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            status_writes: Family::default(),
            in_flight: Gauge::default(),
            ready: Gauge::default(),
            cache_synced: Family::default(),
            source_events: Family::default(),
            policy_errors: Family::default(),
            policy_updates: Family::default(),
            // 1 ms to about 16 s.
            policy_sync: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            abandoned_deletes: Counter::default(),
            drop_events: Counter::default(),
            drop_events_suppressed: Counter::default(),
            drop_events_lost: Counter::default(),
        }
    }
}

fn result(ok: bool) -> String {
    if ok { "success" } else { "error" }.to_owned()
}

impl AgentMetrics {
    /// Counts a dataplane operation (`attach`, `detach`, `adopt`).
    pub fn attach_op(&self, operation: &str, ok: bool) {
        self.attach_ops
            .get_or_create(&OperationLabels {
                operation: operation.to_owned(),
                result: result(ok),
            })
            .inc();
    }

    /// Records how long attaching the interfaces of one ADD took.
    pub fn attach_took(&self, took: Duration) {
        self.attach_duration.observe(took.as_secs_f64());
    }

    /// Counts an error in `component` (`counters`, `network_status`, `reconcile`, `source`...).
    pub fn error(&self, component: &str) {
        self.errors
            .get_or_create(&ComponentLabels {
                component: component.to_owned(),
            })
            .inc();
    }

    /// Records one CNI request.
    pub fn request(&self, command: &str, ok: bool, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                command: command.to_owned(),
                result: result(ok),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a network-status write.
    pub fn status_write(&self, ok: bool) {
        self.status_writes
            .get_or_create(&ResultLabels { result: result(ok) })
            .inc();
        if !ok {
            self.error("network_status");
        }
    }

    /// Marks a request as running until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Records whether the agent is ready (what `/readyz` answers).
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Records whether a watch cache (`pods`, `nads`, `namespaces`, `local`) is synced.
    pub fn cache_synced(&self, cache: &str, synced: bool) {
        self.cache_synced
            .get_or_create(&CacheLabels {
                cache: cache.to_owned(),
            })
            .set(i64::from(synced));
    }

    /// Counts a change event of a source (`pods`, `nads`, `namespaces`, `local`).
    pub fn source_event(&self, cache: &str) {
        self.source_events
            .get_or_create(&CacheLabels {
                cache: cache.to_owned(),
            })
            .inc();
    }

    /// Counts a policy problem: `nad` (an invalid annotation), `mnp` (an invalid
    /// MultiNetworkPolicy), `compile` (an attachment whose policy cannot be compiled),
    /// `install` (the dataplane refused an update).
    pub fn policy_error(&self, kind: &str) {
        self.policy_errors
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Counts a policy update of an attachment (`set` or `clear`).
    pub fn policy_update(&self, operation: &str, ok: bool) {
        self.policy_updates
            .get_or_create(&OperationLabels {
                operation: operation.to_owned(),
                result: result(ok),
            })
            .inc();
    }

    /// Records how long a batch of changes took from the first one seen to its policies
    /// installed.
    pub fn policy_synced_in(&self, took: Duration) {
        self.policy_sync.observe(took.as_secs_f64());
    }

    /// Counts a cache entry whose DEL was given up after `retryDeleteAttempts` failures.
    pub fn abandoned_delete(&self) {
        self.abandoned_deletes.inc();
    }

    /// Counts drop events: `emitted` read off the ring, `suppressed` by the programs' rate limit,
    /// `lost` because the ring was full.
    pub fn drop_events(&self, emitted: u64, suppressed: u64, lost: u64) {
        self.drop_events.inc_by(emitted);
        self.drop_events_suppressed.inc_by(suppressed);
        self.drop_events_lost.inc_by(lost);
    }

    /// The drop event counters so far: emitted, suppressed, lost.
    pub fn drop_event_totals(&self) -> (u64, u64, u64) {
        (
            self.drop_events.get(),
            self.drop_events_suppressed.get(),
            self.drop_events_lost.get(),
        )
    }

    /// How many DELs were given up so far.
    pub fn abandoned_deletes(&self) -> u64 {
        self.abandoned_deletes.get()
    }

    /// Registers every family, and `build` as the build info, in `registry`; returns each
    /// family's name and type.
    pub fn register_into(
        &self,
        registry: &mut Registry,
        build: BuildInfo,
    ) -> Vec<(String, MetricType)> {
        let mut r = Registrar {
            registry,
            families: Vec::new(),
        };
        self.register(&mut r);
        r.register(
            "multus_agent_build",
            "Version of the agent, the commit it was built from, the attach mode and the kernel",
            None,
            Info::new(build),
        );
        r.families
    }

    fn register(&self, r: &mut Registrar<'_>) {
        r.register(
            "multus_agent_attach_operations",
            "Dataplane operations on interfaces (attach, detach, adopt), by result",
            None,
            self.attach_ops.clone(),
        );
        r.register(
            "multus_agent_errors",
            "Errors of the agent, by component",
            None,
            self.errors.clone(),
        );
        r.register(
            "multus_cni_request_duration",
            "Time to answer a CNI request, by command and result",
            Some(Unit::Seconds),
            self.requests.clone(),
        );
        r.register(
            "multus_agent_attach_duration",
            "Time to attach the dataplane to the secondary interfaces of one ADD, all at once \
             (enter the netns, records, map entries, TCX links, pins)",
            Some(Unit::Seconds),
            self.attach_duration.clone(),
        );
        r.register(
            "multus_agent_network_status_writes",
            "Writes of the network-status annotation, by result",
            None,
            self.status_writes.clone(),
        );
        r.register(
            "multus_agent_requests_in_flight",
            "CNI requests being handled now",
            None,
            self.in_flight.clone(),
        );
        r.register(
            "multus_agent_ready",
            "Whether the agent is ready (1: its caches synced and it is not shutting down), as \
             /readyz answers",
            None,
            self.ready.clone(),
        );
        r.register(
            "multus_agent_cache_synced",
            "Whether a watch cache has synced (1) or not (0)",
            None,
            self.cache_synced.clone(),
        );
        r.register(
            "multus_agent_source_events",
            "Changes seen by the agent's caches",
            None,
            self.source_events.clone(),
        );
        r.register(
            "multus_agent_policy_errors",
            "Policy problems: invalid NAD annotations (nad) and MultiNetworkPolicies (mnp), \
             attachments whose policy cannot be compiled (compile) or installed (install)",
            None,
            self.policy_errors.clone(),
        );
        r.register(
            "multus_agent_policy_updates",
            "Policy updates of attachments (set, clear), by result",
            None,
            self.policy_updates.clone(),
        );
        r.register(
            "multus_agent_abandoned_deletes",
            "Pods whose network DEL failed retryDeleteAttempts times and was given up (what \
             they held may have leaked; the log names it)",
            None,
            self.abandoned_deletes.clone(),
        );
        r.register(
            "multus_agent_drop_events",
            "Drop events the agent read from the dataplane (one per dropped or audited packet, \
             within the rate limit)",
            None,
            self.drop_events.clone(),
        );
        r.register(
            "multus_agent_drop_events_suppressed",
            "Drop events the dataplane's per-interface rate limit held back",
            None,
            self.drop_events_suppressed.clone(),
        );
        r.register(
            "multus_agent_drop_events_lost",
            "Drop events lost because the event ring was full",
            None,
            self.drop_events_lost.clone(),
        );
        r.register(
            "multus_agent_policy_sync_duration",
            "Time from a change to the affected attachments' policies installed",
            Some(Unit::Seconds),
            self.policy_sync.clone(),
        );
    }
}

/// Registers families, remembering each one's name and type: an empty family writes nothing
/// on `/metrics`, and [`crate::scrape::series_names`] must know it all the same.
struct Registrar<'a> {
    registry: &'a mut Registry,
    families: Vec<(String, MetricType)>,
}

impl Registrar<'_> {
    fn register(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        metric: impl prometheus_client::registry::Metric,
    ) {
        let full = match &unit {
            Some(u) => format!("{name}_{}", u.as_str()),
            None => name.to_owned(),
        };
        self.families.push((full, metric.metric_type()));
        match unit {
            Some(u) => self.registry.register_with_unit(name, help, u, metric),
            None => self.registry.register(name, help, metric),
        }
    }
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight(Gauge<i64, AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Labels of the `multus_agent_build_info` metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildInfo {
    /// The agent's version.
    pub version: String,
    /// The git commit it was built from (`unknown` without git information).
    pub commit: String,
    /// `tcx` or `clsact`.
    pub attach_mode: String,
    /// The running kernel's release.
    pub kernel: String,
}

/// Reads `/proc/sys/kernel/osrelease`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
