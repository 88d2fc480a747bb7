//! The crate's one error type, [`SimError`], and its mapping to Kubernetes `Status` objects.

use serde_json::{json, Value};

/// Everything that can go wrong in a simulator operation. Each variant maps to the HTTP
/// status code and `Status.reason` a real API server would answer with
/// ([`SimError::code`], [`SimError::reason`], [`SimError::to_status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// The object does not exist (404, `NotFound`).
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        /// `plural.group` of the resource.
        resource: String,
        /// Object name.
        name: String,
    },
    /// An object with that name already exists (409, `AlreadyExists`).
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        /// `plural.group` of the resource.
        resource: String,
        /// Object name.
        name: String,
    },
    /// A precondition (resourceVersion or uid) did not hold (409, `Conflict`).
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {message}")]
    Conflict {
        /// `plural.group` of the resource.
        resource: String,
        /// Object name.
        name: String,
        /// Why.
        message: String,
    },
    /// The request itself is malformed: bad JSON, bad selector, bad query (400, `BadRequest`).
    #[error("{0}")]
    BadRequest(String),
    /// The object is well-formed JSON but not a valid object (422, `Invalid`).
    #[error("{0}")]
    Invalid(String),
    /// The requested resourceVersion or continue token is older than the compaction
    /// window (410, `Expired`).
    #[error("{0}")]
    Gone(String),
    /// The verb is not supported on that path (405, `MethodNotAllowed`).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request body's content type is not supported (415, `UnsupportedMediaType`).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No representation the client accepts can be produced (406, `NotAcceptable`).
    #[error("{0}")]
    NotAcceptable(String),
    /// A controller action was called on a simulator built with `controllers: false`
    /// (400, `BadRequest`).
    #[error("controller emulation is disabled (SimConfig::controllers is false)")]
    ControllersDisabled,
}

impl SimError {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            SimError::NotFound { .. } => 404,
            SimError::AlreadyExists { .. } | SimError::Conflict { .. } => 409,
            SimError::BadRequest(_) | SimError::ControllersDisabled => 400,
            SimError::Invalid(_) => 422,
            SimError::Gone(_) => 410,
            SimError::MethodNotAllowed(_) => 405,
            SimError::UnsupportedMediaType(_) => 415,
            SimError::NotAcceptable(_) => 406,
        }
    }

    /// The `Status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            SimError::NotFound { .. } => "NotFound",
            SimError::AlreadyExists { .. } => "AlreadyExists",
            SimError::Conflict { .. } => "Conflict",
            SimError::BadRequest(_) | SimError::ControllersDisabled => "BadRequest",
            SimError::Invalid(_) => "Invalid",
            SimError::Gone(_) => "Expired",
            SimError::MethodNotAllowed(_) => "MethodNotAllowed",
            SimError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            SimError::NotAcceptable(_) => "NotAcceptable",
        }
    }

    /// The `Status` object (`kind: Status`, `status: Failure`) a real API server answers with.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        match self {
            SimError::NotFound { resource, name }
            | SimError::AlreadyExists { resource, name }
            | SimError::Conflict { resource, name, .. } => {
                let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
                status["details"] = json!({"name": name, "group": group, "kind": kind});
            }
            _ => {}
        }
        status
    }

    pub(crate) fn not_found(resource: crate::Resource, name: &str) -> SimError {
        SimError::NotFound {
            resource: resource.qualified(),
            name: name.to_string(),
        }
    }

    pub(crate) fn conflict(resource: crate::Resource, name: &str, message: &str) -> SimError {
        SimError::Conflict {
            resource: resource.qualified(),
            name: name.to_string(),
            message: message.to_string(),
        }
    }
}
