//! Rebuilding a read model from sequence 1 while the live one keeps serving: replay into tables
//! aside (`<table>__rebuild`, created without indexes so the bulk load is cheap), build the live
//! table's indexes on them, catch up with the live checkpoint, then swap the tables in one
//! transaction that holds the live checkpoint's row lock.

use std::sync::Arc;

use bus::Bus;
use events::StreamSeq;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::runner::{Runner, RunnerConfig, apply_range_in};
use crate::{Projection, ProjectionError, Target};

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// The position the swapped-in tables reflect.
    pub position: StreamSeq,
}

/// Rebuilds `projection`. `progress(position, head)` is called as batches commit.
pub async fn rebuild(
    pool: &PgPool,
    bus: &Bus,
    projection: Arc<dyn Projection>,
    config: RunnerConfig,
    progress: impl Fn(StreamSeq, StreamSeq) + Send + Sync + 'static,
    cancel: CancellationToken,
) -> Result<Rebuilt, ProjectionError> {
    let aside = Target::REBUILD;
    prepare_aside(pool, projection.as_ref()).await?;
    // Unique indexes now (upserts need them, and they guard exactly-once); the rest after the
    // bulk load, which is much cheaper than maintaining them row by row.
    let mut renames = Vec::new();
    for table in projection.tables() {
        renames.extend(build_indexes(pool, table, IndexKind::Unique).await?);
    }
    let head = bus.last_seq(projection.stream()).await?;
    let progress = Arc::new(progress);
    let report = progress.clone();
    let runner = Runner::new(pool.clone(), bus.clone(), projection.clone(), config)
        .with_target(aside.clone())
        .with_progress(move |position| report(position, head));
    let mut position = runner.run_until(Some(head), cancel.clone()).await?;
    if cancel.is_cancelled() {
        return Err(ProjectionError::Other("rebuild cancelled".to_owned()));
    }
    for table in projection.tables() {
        renames.extend(build_indexes(pool, table, IndexKind::NonUnique).await?);
    }
    for _attempt in 0..5 {
        // Close most of the gap to the live model without holding its lock.
        let live = live_position(pool, projection.name()).await?;
        if live > position {
            position = runner.run_until(Some(live), cancel.clone()).await?;
        }
        match swap(pool, bus, projection.as_ref(), position, &renames).await {
            Ok(rebuilt) => {
                progress(rebuilt.position, rebuilt.position.max(head));
                return Ok(rebuilt);
            }
            Err(err) => {
                tracing::warn!(projection = projection.name(), error = %err, "swap failed, catching up again")
            }
        }
    }
    Err(ProjectionError::Other(
        "could not swap the rebuilt tables in after 5 attempts".to_owned(),
    ))
}

async fn prepare_aside(pool: &PgPool, projection: &dyn Projection) -> Result<(), ProjectionError> {
    let mut tx = pool.begin().await?;
    for table in projection.tables() {
        let aside = Target::REBUILD.table(table);
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {aside}")))
            .execute(&mut *tx)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {aside} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)"
        )))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1")
        .bind(Target::REBUILD.checkpoint(projection.name()))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum IndexKind {
    Unique,
    NonUnique,
}

/// Creates the live table's indexes of one kind (the primary key is unique) on its aside copy,
/// named `<index>__rebuild`; returns the renames the swap applies once the live table is gone.
async fn build_indexes(
    pool: &PgPool,
    table: &str,
    kind: IndexKind,
) -> Result<Vec<(String, String)>, ProjectionError> {
    let aside = Target::REBUILD.table(table);
    let indexes: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT i.relname::text, pg_get_indexdef(i.oid), x.indisprimary FROM pg_index x \
         JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = $1::regclass AND x.indisunique = $2 \
         ORDER BY x.indisprimary DESC, i.relname",
    )
    .bind(table)
    .bind(kind == IndexKind::Unique)
    .fetch_all(pool)
    .await?;
    let mut renames = Vec::new();
    for (name, definition, primary) in indexes {
        let canonical = name.trim_end_matches("__rebuild").to_owned();
        let temporary = format!("{canonical}__rebuild");
        let Some((_, method)) = definition.split_once(" USING ") else {
            return Err(ProjectionError::Other(format!(
                "cannot read the definition of index {name}: {definition}"
            )));
        };
        let unique = if definition.starts_with("CREATE UNIQUE") {
            "UNIQUE "
        } else {
            ""
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE {unique}INDEX {temporary} ON {aside} USING {method}"
        )))
        .execute(pool)
        .await?;
        if primary {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE {aside} ADD CONSTRAINT {temporary} PRIMARY KEY USING INDEX {temporary}"
            )))
            .execute(pool)
            .await?;
        }
        renames.push((temporary, canonical));
    }
    Ok(renames)
}

async fn live_position(pool: &PgPool, name: &str) -> Result<StreamSeq, ProjectionError> {
    let last: Option<i64> =
        sqlx::query_scalar("SELECT last_seq FROM projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(StreamSeq(last.unwrap_or(0).max(0) as u64))
}

async fn swap(
    pool: &PgPool,
    bus: &Bus,
    projection: &dyn Projection,
    rebuilt: StreamSeq,
    renames: &[(String, String)],
) -> Result<Rebuilt, ProjectionError> {
    let name = projection.name();
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO projection_checkpoints (name, stream, last_seq) VALUES ($1, $2, 0) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(projection.stream().as_str())
        .execute(&mut *tx)
        .await?;
    // The live runner takes this lock for every batch: it waits while we swap.
    let live: i64 = sqlx::query_scalar(
        "SELECT last_seq FROM projection_checkpoints WHERE name = $1 FOR UPDATE",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    let live = StreamSeq(live.max(0) as u64);
    apply_range_in(&mut tx, bus, projection, &Target::REBUILD, rebuilt, live).await?;
    let position = rebuilt.max(live);
    for table in projection.tables() {
        let aside = Target::REBUILD.table(table);
        let old = format!("{table}__old");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {table} RENAME TO {old}"
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {aside} RENAME TO {table}"
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {old}")))
            .execute(&mut *tx)
            .await?;
    }
    // The old indexes are gone with the old tables: the new ones take their names.
    for (temporary, canonical) in renames {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER INDEX {temporary} RENAME TO {canonical}"
        )))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE projection_checkpoints SET last_seq = $2, updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(position.0 as i64)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1")
        .bind(Target::REBUILD.checkpoint(name))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Rebuilt { position })
}
