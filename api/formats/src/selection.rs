//! Which object a history or a timeline is about: one uid (of a kind its field names, or
//! of any kind), or a kind, namespace and name (every uid that name had). The same rules
//! for `GET /v1/history`, `GET /v1/timeline` and the CLI's `history`.

use ledger::projection::{bounded_text, MAX_NAME_LEN, MAX_UID_LEN};
use ledger::{LedgerView, Projection, StoredEntry};
use schemas::{ObjectKind, Text};

use crate::FormatError;

/// Every word a kind may be given as, in any case: the Kubernetes kind, its lowercase
/// plural, and the short names `claim` and `pvc` ([`ObjectKind::parse`] accepts exactly
/// these).
pub const KIND_WORDS: [&str; 10] = [
    "Sandbox",
    "Sandboxes",
    "SandboxClaim",
    "SandboxClaims",
    "claim",
    "Pod",
    "Pods",
    "PersistentVolumeClaim",
    "PersistentVolumeClaims",
    "pvc",
];

/// The selectors a caller may give; exactly one uid, or kind with namespace and name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectionFields {
    /// A Pod uid.
    pub pod_uid: Option<String>,
    /// A SandboxClaim uid.
    pub claim_uid: Option<String>,
    /// A Sandbox uid.
    pub sandbox_uid: Option<String>,
    /// A PersistentVolumeClaim uid.
    pub pvc_uid: Option<String>,
    /// A kind, one of [`KIND_WORDS`] in any case (with `namespace` and `name`).
    pub kind: Option<String>,
    /// A namespace (with `kind` and `name`).
    pub namespace: Option<String>,
    /// A name (with `kind` and `namespace`).
    pub name: Option<String>,
}

/// The object a history or a timeline is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// One uid, given as `field`; of `kind` when the field names one.
    Uid {
        /// The selector it was given as (`pod_uid`, `uid`, ...), for messages.
        field: &'static str,
        /// The kind the field requires, if any.
        kind: Option<ObjectKind>,
        /// The uid.
        uid: String,
    },
    /// Every uid an object of this kind, namespace and name had.
    Name {
        /// The kind.
        kind: ObjectKind,
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
}

fn invalid(detail: impl Into<String>) -> FormatError {
    FormatError::InvalidRequest(detail.into())
}

impl Selection {
    /// The one object `fields` name; refused unless exactly one uid, or kind, namespace
    /// and name together, are given, each within the limits the ledger records.
    pub fn from_fields(fields: SelectionFields) -> Result<Selection, FormatError> {
        let uids = [
            ("pod_uid", ObjectKind::Pod, fields.pod_uid),
            ("claim_uid", ObjectKind::SandboxClaim, fields.claim_uid),
            ("sandbox_uid", ObjectKind::Sandbox, fields.sandbox_uid),
            ("pvc_uid", ObjectKind::PersistentVolumeClaim, fields.pvc_uid),
        ];
        let by_name = fields.kind.is_some() || fields.namespace.is_some() || fields.name.is_some();
        let mut chosen: Vec<Selection> = uids
            .into_iter()
            .filter_map(|(field, kind, uid)| uid.map(|uid| (field, kind, uid)))
            .map(|(field, kind, uid)| {
                bounded_text(field, &uid, MAX_UID_LEN).map_err(invalid)?;
                Ok(Selection::Uid {
                    field,
                    kind: Some(kind),
                    uid,
                })
            })
            .collect::<Result<_, FormatError>>()?;
        if by_name {
            let (Some(kind), Some(namespace), Some(name)) =
                (fields.kind, fields.namespace, fields.name)
            else {
                return Err(invalid(
                    "a history by name needs kind, namespace and name together",
                ));
            };
            let kind = ObjectKind::parse(&kind).ok_or_else(|| {
                invalid(format!(
                    "unknown kind {kind:?}: one of Sandbox, SandboxClaim, Pod, PersistentVolumeClaim (any case; also plurals, claim and pvc)"
                ))
            })?;
            bounded_text("namespace", &namespace, MAX_NAME_LEN).map_err(invalid)?;
            bounded_text("name", &name, MAX_NAME_LEN).map_err(invalid)?;
            chosen.push(Selection::Name {
                kind,
                namespace,
                name,
            });
        }
        match chosen.len() {
            1 => Ok(chosen.remove(0)),
            0 => Err(invalid(
                "name one object: pod_uid, claim_uid, sandbox_uid, pvc_uid, or kind with namespace and name",
            )),
            _ => Err(invalid(
                "name exactly one object: pod_uid, claim_uid, sandbox_uid, pvc_uid, or kind with namespace and name",
            )),
        }
    }

    /// A uid of any kind, given as `field`.
    pub fn any_uid(field: &'static str, uid: String) -> Result<Selection, FormatError> {
        bounded_text(field, &uid, MAX_UID_LEN).map_err(invalid)?;
        Ok(Selection::Uid {
            field,
            kind: None,
            uid,
        })
    }

    /// The uids selected: the one, or every uid the name had. A uid the ledger recorded as
    /// another kind than its field says is refused.
    pub fn uids(&self, projection: &Projection) -> Result<Vec<String>, FormatError> {
        match self {
            Selection::Uid { field, kind, uid } => {
                if let (Some(expected), Some(record)) = (kind, projection.object(uid)) {
                    if record.current.kind != *expected {
                        return Err(invalid(format!(
                            "{field} {uid} is a {}, not a {}",
                            record.current.kind.as_str(),
                            expected.as_str()
                        )));
                    }
                }
                Ok(vec![uid.clone()])
            }
            Selection::Name {
                kind,
                namespace,
                name,
            } => Ok(projection
                .uids_of(*kind, namespace, name)
                .iter()
                .map(Text::to_string)
                .collect()),
        }
    }

    /// Every seq that recorded one of the selected uids or names it, in order.
    pub fn seqs(&self, projection: &Projection) -> Result<Vec<u64>, FormatError> {
        let mut seqs: Vec<u64> = self
            .uids(projection)?
            .iter()
            .flat_map(|uid| projection.history_of(uid))
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        Ok(seqs)
    }

    /// The selected uids and their whole history: every stored entry that recorded one of
    /// them, in order (seqs of a batch still being written are skipped).
    pub fn history(
        &self,
        ledger: &LedgerView,
    ) -> Result<(Vec<String>, Vec<StoredEntry>), FormatError> {
        let projection = ledger.projection();
        let uids = self.uids(projection)?;
        let mut entries = Vec::new();
        for seq in self.seqs(projection)? {
            if let Some(stored) = ledger.entry(seq)? {
                entries.push(stored);
            }
        }
        Ok((uids, entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> SelectionFields {
        SelectionFields::default()
    }

    #[test]
    fn every_kind_word_parses_in_any_case_and_every_kind_has_its_name() {
        for word in KIND_WORDS {
            for text in [
                word.to_string(),
                word.to_ascii_lowercase(),
                word.to_ascii_uppercase(),
            ] {
                assert!(ObjectKind::parse(&text).is_some(), "{text}");
            }
        }
        for kind in ObjectKind::ALL {
            assert!(KIND_WORDS.contains(&kind.as_str()), "{}", kind.as_str());
        }
    }

    #[test]
    fn a_name_takes_kind_aliases() {
        for (word, kind) in [
            ("pvc", ObjectKind::PersistentVolumeClaim),
            ("claim", ObjectKind::SandboxClaim),
            ("PODS", ObjectKind::Pod),
            ("sandbox", ObjectKind::Sandbox),
        ] {
            let selection = Selection::from_fields(SelectionFields {
                kind: Some(word.into()),
                namespace: Some("ns".into()),
                name: Some("n".into()),
                ..fields()
            })
            .unwrap();
            assert_eq!(
                selection,
                Selection::Name {
                    kind,
                    namespace: "ns".into(),
                    name: "n".into()
                }
            );
        }
    }

    #[test]
    fn exactly_one_object_is_named() {
        let message = |fields: SelectionFields| match Selection::from_fields(fields) {
            Err(FormatError::InvalidRequest(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(message(fields()).starts_with("name one object"));
        assert!(message(SelectionFields {
            pod_uid: Some("a".into()),
            claim_uid: Some("b".into()),
            ..fields()
        })
        .starts_with("name exactly one object"));
        assert!(message(SelectionFields {
            kind: Some("Pod".into()),
            name: Some("p".into()),
            ..fields()
        })
        .contains("kind, namespace and name together"));
        assert!(message(SelectionFields {
            kind: Some("Deployment".into()),
            namespace: Some("ns".into()),
            name: Some("p".into()),
            ..fields()
        })
        .starts_with("unknown kind \"Deployment\""));
        assert!(message(SelectionFields {
            pod_uid: Some(String::new()),
            ..fields()
        })
        .contains("empty"));
        // Names and namespaces: 1 to 253 characters, no control characters.
        let by_name = |namespace: &str, name: &str| {
            Selection::from_fields(SelectionFields {
                kind: Some("Pod".into()),
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                ..fields()
            })
        };
        assert!(by_name("ns", &"a".repeat(253)).is_ok());
        assert!(by_name("ns", &"a".repeat(254)).is_err());
        assert!(by_name(&"a".repeat(254), "p").is_err());
        assert!(by_name("ns", "a\nb").is_err());
        assert!(by_name("", "p").is_err());
        assert_eq!(
            Selection::from_fields(SelectionFields {
                pvc_uid: Some("u".into()),
                ..fields()
            })
            .unwrap(),
            Selection::Uid {
                field: "pvc_uid",
                kind: Some(ObjectKind::PersistentVolumeClaim),
                uid: "u".into()
            }
        );
    }
}
