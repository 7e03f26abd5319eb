//! The policy model and its compiler. [`model`] is what one attachment enforces (a leaf: the
//! dataplane installs it, nothing here touches eBPF); the rest compiles NAD policy annotations
//! and MultiNetworkPolicies into the [`model::Policy`] of each attachment on this node.
//!
//! Pure and synchronous. The caller keeps a [`Snapshot`] of pods, namespaces, NADs and
//! MultiNetworkPolicies (from watches, or from local files in standalone mode), registers the
//! node's attachments, and after every change recompiles the attachments the change affects:
//!
//! ```no_run
//! # use multus_agent::policy::{Snapshot, NadView, compile};
//! # fn install(_: &multus_agent::policy::AttachmentKey, _: &multus_agent::policy::model::Policy) {}
//! # let mut snapshot = Snapshot::new();
//! # let nad = NadView::default();
//! let update = snapshot.upsert_nad(nad);
//! if let Some(problem) = &update.invalid {
//!     // an Event on the NAD; the attachments keep their previous policy
//! }
//! for key in &update.affected {
//!     match compile(&snapshot, key) {
//!         Ok(Some(compiled)) => install(key, &compiled.policy),
//!         Ok(None) => { /* no policy: count only */ }
//!         Err(e) => { /* keep the previous policy, report e */ }
//!     }
//! }
//! ```
//!
//! docs/policy.md describes the annotation, the MultiNetworkPolicy semantics and how the two
//! combine.
pub mod annotation;
pub mod canonical;
pub mod combine;
pub mod compile;
pub mod error;
pub mod eval;
pub mod index;
pub mod inputs;
pub mod mnp;
pub mod model;
pub mod resolve;
pub mod selector;
pub mod snapshot;
pub mod subnets;

pub use self::{
    annotation::NadPolicy,
    compile::{CompiledPolicy, InvalidPolicySource, PolicySource, compile, compile_attachment},
    error::{CompileError, FieldError, ObjectError},
    inputs::{
        AttachmentKey, LocalAttachment, NAD_POLICY_ANNOTATION, NadView, NamedPort, NamespaceView,
        ObjectKey, PodNetwork, PodView,
    },
    mnp::MnpEntry,
    snapshot::{NadEntry, Snapshot, Update},
};
