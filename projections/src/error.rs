/// Why a batch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The message can never be applied (malformed, invalid for this model).
    #[error("poison message: {0}")]
    Poison(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Beginning, locking the checkpoint, writing it or committing failed: always retried.
    #[error("checkpoint transaction failed: {0}")]
    Checkpoint(#[source] sqlx::Error),
}

impl ApplyError {
    /// Worth retrying the same batch as is: the database went away or asked us to retry.
    pub fn is_transient(&self) -> bool {
        match self {
            ApplyError::Poison(_) => false,
            ApplyError::Checkpoint(_) => true,
            ApplyError::Database(err) => is_transient(err),
        }
    }
}

pub(crate) fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            // Connection exceptions, transaction rollbacks (serialization, deadlock),
            // insufficient resources, operator intervention (shutdown), system errors.
            // Plus read-only transactions (25006): a failover in progress.
            let code = db.code();
            let class = code.as_deref().map(|c| &c[..2.min(c.len())]);
            matches!(class, Some("08" | "40" | "53" | "57" | "58"))
                || code.as_deref() == Some("25006")
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("failed to connect to postgres")]
    Connect(#[source] sqlx::Error),
    #[error("failed to run migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("bus error")]
    Bus(#[from] bus::BusError),
    #[error("unknown projection {0:?}")]
    UnknownProjection(String),
    #[error("{0}")]
    Other(String),
}

impl ProjectionError {
    /// Whether Postgres is not there now (rather than a query of ours failing): no connection,
    /// a pool that timed out or closed, or the server shutting down or not yet accepting
    /// (SQLSTATE classes 08 and 57P0x).
    pub fn is_database_away(&self) -> bool {
        let (ProjectionError::Connect(db) | ProjectionError::Database(db)) = self else {
            return false;
        };
        match db {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(err) => err
                .code()
                .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ProjectionError;

    #[test]
    fn postgres_away_is_told_apart_from_our_own_errors() {
        for away in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ] {
            assert!(ProjectionError::Database(away).is_database_away());
        }
        assert!(ProjectionError::Connect(sqlx::Error::PoolTimedOut).is_database_away());
        // A url that does not parse is ours to fix, not Postgres away.
        let bad = ProjectionError::Connect(sqlx::Error::Configuration("bad url".into()));
        assert!(!bad.is_database_away());
        assert!(!ProjectionError::Database(sqlx::Error::RowNotFound).is_database_away());
        assert!(!ProjectionError::Other("ours".into()).is_database_away());
    }
}
