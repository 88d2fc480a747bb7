//! The binary's one error type and the one place it becomes an exit code: 0 ok, 1 a
//! verification failed or a check was not allowed, 2 a usage or input error.

/// Why a command did not succeed; [`CommandError::exit_code`] is the only mapping to an
/// exit code, and every error of the library crates reaches it through the `From`
/// conversions below, so an integrity failure is exit 1 whichever command meets it.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Exit 1: a verification failed (a damaged or tampered ledger, a chain or checkpoint
    /// that does not hold, a rejected bundle), a check was not allowed, or a scenario
    /// expectation failed. An empty message prints nothing (the command printed why).
    #[error("{0}")]
    Check(String),
    /// Exit 2: bad usage or input (a missing file, a malformed argument, a location with no
    /// ledger, a store that cannot be reached).
    #[error("{0}")]
    Input(String),
}

impl CommandError {
    /// The process exit code: the one place exit codes are decided.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Check(_) => 1,
            CommandError::Input(_) => 2,
        }
    }
}

impl From<ledger::LedgerError> for CommandError {
    fn from(e: ledger::LedgerError) -> CommandError {
        match e {
            // Where the library says the ledger fails verification, the command line can
            // say how to look at it anyway.
            ledger::LedgerError::Corrupt(_) => CommandError::Check(format!(
                "{e}; open it read-only with --allow-corrupt to inspect it"
            )),
            e if e.is_integrity_failure() => CommandError::Check(e.to_string()),
            e => CommandError::Input(e.to_string()),
        }
    }
}

impl From<formats::FormatError> for CommandError {
    /// A damaged ledger met while producing an answer fails like a failed verification
    /// (exit 1); everything else is the request's or the output's fault (exit 2).
    fn from(e: formats::FormatError) -> CommandError {
        match e {
            formats::FormatError::Ledger(e) => e.into(),
            other => CommandError::Input(other.to_string()),
        }
    }
}

impl From<api::ApiError> for CommandError {
    fn from(e: api::ApiError) -> CommandError {
        match e {
            // A ledger error keeps its own classification: a ledger that contradicts its
            // checkpoint met while planning an export is the same failure as at open.
            api::ApiError::Ledger(e) => e.into(),
            other => CommandError::Input(other.to_string()),
        }
    }
}

impl From<std::io::Error> for CommandError {
    fn from(e: std::io::Error) -> CommandError {
        CommandError::Input(e.to_string())
    }
}

impl From<serde_json::Error> for CommandError {
    fn from(e: serde_json::Error) -> CommandError {
        CommandError::Input(e.to_string())
    }
}

#[cfg(feature = "sim")]
impl From<scenario::ScenarioError> for CommandError {
    fn from(e: scenario::ScenarioError) -> CommandError {
        CommandError::Input(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::{FailureKind, LedgerError, VerifyFailure};

    fn corrupt() -> LedgerError {
        LedgerError::Corrupt(VerifyFailure {
            seq: 7,
            kind: FailureKind::CheckpointMismatch,
            detail: "the ledger does not hold the signed tree".into(),
        })
    }

    #[test]
    fn an_integrity_failure_is_exit_1_however_it_arrives() {
        assert_eq!(CommandError::from(corrupt()).exit_code(), 1);
        assert_eq!(
            CommandError::from(api::ApiError::Ledger(corrupt())).exit_code(),
            1
        );
        assert_eq!(
            CommandError::from(formats::FormatError::Ledger(corrupt())).exit_code(),
            1
        );
        let missing = LedgerError::EntryMissing { seq: 3 };
        assert_eq!(CommandError::from(missing).exit_code(), 1);
        // The library names no flag; the command line says how to inspect the ledger.
        assert!(CommandError::from(corrupt())
            .to_string()
            .contains("--allow-corrupt"));
    }

    #[test]
    fn input_errors_are_exit_2() {
        assert_eq!(CommandError::from(LedgerError::ReadOnly).exit_code(), 2);
        assert_eq!(
            CommandError::from(api::ApiError::Ledger(LedgerError::ReadOnly)).exit_code(),
            2
        );
        let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(CommandError::from(missing).exit_code(), 2);
        assert_eq!(
            CommandError::from(api::ApiError::Config("bad TLS key".into())).exit_code(),
            2
        );
        let request = formats::FormatError::InvalidRequest("two objects named".into());
        assert_eq!(CommandError::from(request).exit_code(), 2);
    }
}
