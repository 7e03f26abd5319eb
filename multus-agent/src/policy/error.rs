//! Errors: an invalid policy object names the object and the field; a failed compile names the
//! attachment and every object that stands in its way.
use std::fmt;

use super::inputs::{AttachmentKey, NAD_POLICY_ANNOTATION, ObjectKey};
use super::model::PolicyError;

/// A field of a policy document and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Where: `ingress.allow[2].ports[0]`, `spec.egress[0].to[1].ipBlock.except[0]`; empty
    /// for the document as a whole.
    pub path: String,
    /// What.
    pub message: String,
}

impl FieldError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A policy object that cannot be compiled. The caller keeps the previous policy of the
/// attachments it affects in force and reports it (an Event on the object, a log line).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// The NAD's policy annotation.
    #[error("NetworkAttachmentDefinition {nad}: annotation {NAD_POLICY_ANNOTATION}: {field}")]
    NadAnnotation {
        /// The NAD.
        nad: ObjectKey,
        /// The field and the problem.
        field: FieldError,
    },
    /// A MultiNetworkPolicy.
    #[error("MultiNetworkPolicy {policy}: {field}")]
    MultiNetworkPolicy {
        /// The policy.
        policy: ObjectKey,
        /// The field and the problem.
        field: FieldError,
    },
}

impl ObjectError {
    /// The object's kind and key, e.g. for an Event.
    pub fn object(&self) -> (&'static str, &ObjectKey) {
        match self {
            Self::NadAnnotation { nad, .. } => ("NetworkAttachmentDefinition", nad),
            Self::MultiNetworkPolicy { policy, .. } => ("MultiNetworkPolicy", policy),
        }
    }

    /// The field and the problem.
    pub fn field(&self) -> &FieldError {
        match self {
            Self::NadAnnotation { field, .. } | Self::MultiNetworkPolicy { field, .. } => field,
        }
    }
}

/// Why an attachment's policy could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The attachment is not known to the snapshot.
    #[error("attachment {0}: not in the snapshot")]
    UnknownAttachment(AttachmentKey),
    /// Its pod is not in the snapshot, so which policies select it is unknown.
    #[error("attachment {attachment}: its pod is not in the snapshot")]
    UnknownPod {
        /// The attachment.
        attachment: AttachmentKey,
    },
    /// Policy objects that apply to it are invalid.
    #[error("attachment {attachment}: {}", join(.errors))]
    InvalidObjects {
        /// The attachment.
        attachment: AttachmentKey,
        /// Every invalid object that applies (or may apply) to it.
        errors: Vec<ObjectError>,
    },
    /// The result is not a policy the dataplane accepts.
    #[error("attachment {attachment}: the compiled policy cannot be installed: {source}")]
    Uninstallable {
        /// The attachment.
        attachment: AttachmentKey,
        /// Why.
        source: PolicyError,
    },
}

fn join(errors: &[ObjectError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
