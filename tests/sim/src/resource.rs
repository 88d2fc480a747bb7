//! The six resource types the simulator serves, with their names, groups and served versions.
//!
//! Core resources (`Pod`, `PersistentVolumeClaim`) live under `/api/v1`; the agent-sandbox
//! custom resources live under `/apis/agents.x-k8s.io/{version}` (`Sandbox`) and
//! `/apis/extensions.agents.x-k8s.io/{version}` (the other three). Which versions a custom
//! resource is served in depends on [`Served`].

/// The agent-sandbox core group (`Sandbox`).
pub const AGENTS_GROUP: &str = "agents.x-k8s.io";
/// The agent-sandbox extensions group (`SandboxClaim`, `SandboxWarmPool`, `SandboxTemplate`).
pub const EXTENSIONS_GROUP: &str = "extensions.agents.x-k8s.io";

/// Which agent-sandbox API versions the simulated cluster serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Served {
    /// agent-sandbox v0.4.x: only `v1alpha1`.
    V1alpha1Only,
    /// agent-sandbox v0.5.x: `v1beta1` (preferred, storage) and `v1alpha1` (deprecated).
    #[default]
    Both,
}

impl Served {
    /// The versions served for the agent-sandbox groups, preferred first.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Served::V1alpha1Only => &["v1alpha1"],
            Served::Both => &["v1beta1", "v1alpha1"],
        }
    }

    /// The preferred version for the agent-sandbox groups.
    pub fn preferred(self) -> &'static str {
        self.versions()[0]
    }
}

/// One of the resource types the simulator stores and serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `agents.x-k8s.io` `Sandbox` (`sandboxes`).
    Sandbox,
    /// `extensions.agents.x-k8s.io` `SandboxClaim` (`sandboxclaims`).
    SandboxClaim,
    /// `extensions.agents.x-k8s.io` `SandboxWarmPool` (`sandboxwarmpools`).
    SandboxWarmPool,
    /// `extensions.agents.x-k8s.io` `SandboxTemplate` (`sandboxtemplates`).
    SandboxTemplate,
    /// core `v1` `Pod` (`pods`).
    Pod,
    /// core `v1` `PersistentVolumeClaim` (`persistentvolumeclaims`).
    PersistentVolumeClaim,
}

impl Resource {
    /// Every resource type, in storage (and GC scan) order.
    pub const ALL: [Resource; 6] = [
        Resource::Sandbox,
        Resource::SandboxClaim,
        Resource::SandboxWarmPool,
        Resource::SandboxTemplate,
        Resource::Pod,
        Resource::PersistentVolumeClaim,
    ];

    /// The object kind, e.g. `SandboxClaim`.
    pub fn kind(self) -> &'static str {
        match self {
            Resource::Sandbox => "Sandbox",
            Resource::SandboxClaim => "SandboxClaim",
            Resource::SandboxWarmPool => "SandboxWarmPool",
            Resource::SandboxTemplate => "SandboxTemplate",
            Resource::Pod => "Pod",
            Resource::PersistentVolumeClaim => "PersistentVolumeClaim",
        }
    }

    /// The plural resource name used in URLs, e.g. `sandboxclaims`.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Sandbox => "sandboxes",
            Resource::SandboxClaim => "sandboxclaims",
            Resource::SandboxWarmPool => "sandboxwarmpools",
            Resource::SandboxTemplate => "sandboxtemplates",
            Resource::Pod => "pods",
            Resource::PersistentVolumeClaim => "persistentvolumeclaims",
        }
    }

    /// The singular resource name, e.g. `sandboxclaim`.
    pub fn singular(self) -> &'static str {
        match self {
            Resource::Sandbox => "sandbox",
            Resource::SandboxClaim => "sandboxclaim",
            Resource::SandboxWarmPool => "sandboxwarmpool",
            Resource::SandboxTemplate => "sandboxtemplate",
            Resource::Pod => "pod",
            Resource::PersistentVolumeClaim => "persistentvolumeclaim",
        }
    }

    /// Short names as the CRDs (or the core API) declare them.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Resource::Sandbox => &["sandbox"],
            Resource::SandboxClaim => &["sandboxclaim"],
            Resource::SandboxWarmPool => &["swp"],
            Resource::SandboxTemplate => &["sandboxtemplate"],
            Resource::Pod => &["po"],
            Resource::PersistentVolumeClaim => &["pvc"],
        }
    }

    /// The API group (`""` for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Resource::Sandbox => AGENTS_GROUP,
            Resource::SandboxClaim | Resource::SandboxWarmPool | Resource::SandboxTemplate => {
                EXTENSIONS_GROUP
            }
            Resource::Pod | Resource::PersistentVolumeClaim => "",
        }
    }

    /// Whether this is a core (`/api/v1`) resource.
    pub fn is_core(self) -> bool {
        self.group().is_empty()
    }

    /// The versions this resource is served in, preferred first.
    pub fn versions(self, served: Served) -> &'static [&'static str] {
        if self.is_core() {
            &["v1"]
        } else {
            served.versions()
        }
    }

    /// `apiVersion` for `version` (`v1` for core, `group/version` otherwise).
    pub fn api_version(self, version: &str) -> String {
        if self.is_core() {
            version.to_string()
        } else {
            format!("{}/{}", self.group(), version)
        }
    }

    /// The preferred `apiVersion` under `served`.
    pub fn preferred_api_version(self, served: Served) -> String {
        self.api_version(self.versions(served)[0])
    }

    /// The resource whose kind is `kind`.
    pub fn from_kind(kind: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.kind() == kind)
    }

    /// The resource served as `plural` in `group`.
    pub fn from_plural(group: &str, plural: &str) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| r.group() == group && r.plural() == plural)
    }

    /// `plural.group` as kubectl prints it (`sandboxes.agents.x-k8s.io`, `pods`).
    pub fn qualified(self) -> String {
        if self.is_core() {
            self.plural().to_string()
        } else {
            format!("{}.{}", self.plural(), self.group())
        }
    }
}

/// The group of an `apiVersion` string (`""` for `v1`).
pub fn group_of(api_version: &str) -> &str {
    match api_version.rsplit_once('/') {
        Some((group, _)) => group,
        None => "",
    }
}
