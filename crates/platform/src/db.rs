//! Storage: SQLite by default (one file per service in the data directory), PostgreSQL when a database URL
//! is set (one database per service, created if missing). Migrations are embedded in each service and applied
//! at start.
//!
//! Services write their SQL once, in the subset both engines share (`$1` parameters, TEXT, BIGINT, BOOLEAN,
//! times as BIGINT microseconds), and run it through [`with_db!`](crate::with_db), which expands the same code
//! for either pool.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, PgPool, SqlitePool};

use crate::config::Settings;

/// A service's database.
#[derive(Debug, Clone)]
pub enum Db {
    /// An embedded SQLite file.
    Sqlite(SqlitePool),
    /// A PostgreSQL database.
    Postgres(PgPool),
}

/// Runs the same block against whichever pool a [`Db`] holds: `with_db!(db, pool => query.fetch_one(pool).await)`.
#[macro_export]
macro_rules! with_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

/// Opening or migrating a database failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL or options were not understood.
    #[error("bad database URL for {service}: {source}")]
    Url {
        /// The service.
        service: String,
        /// Why.
        source: sqlx::Error,
    },
    /// The database could not be reached or created.
    #[error("cannot open the database of {service}: {source}")]
    Connect {
        /// The service.
        service: String,
        /// Why.
        source: sqlx::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A migration failed.
    #[error("migrating the database of {service} failed: {source}")]
    Migrate {
        /// The service.
        service: String,
        /// Why.
        source: sqlx::migrate::MigrateError,
    },
}

/// How often an open database's pool is checked and reported (see `Db::watch`).
pub const WATCH_INTERVAL: Duration = Duration::from_secs(15);

/// A pooled connection that sat idle at least this long is checked (a ping) before it is handed out; one used
/// more recently is handed out as it is. sqlx's default pings on every acquire: a round trip to the server per
/// transaction or pooled statement (about 18 per checkout), though under load a connection comes back to the pool
/// within milliseconds. A connection the server dropped while it sat in the pool (a restart, an idle timeout) is
/// still found and replaced before use. Connection pools such as HikariCP skip the check the same way (for 500 ms).
pub const CHECK_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// `options` with the check of [`CHECK_IF_IDLE_FOR`] instead of a ping on every acquire.
fn check_when_idle<DB: sqlx::Database>(options: sqlx::pool::PoolOptions<DB>) -> sqlx::pool::PoolOptions<DB> {
    options.test_before_acquire(false).before_acquire(|connection, meta| {
        Box::pin(async move {
            if meta.idle_for >= CHECK_IF_IDLE_FOR {
                connection.ping().await?;
            }
            Ok(true)
        })
    })
}

/// Counts and logs a failure to connect to `service`'s database, and makes it the error to return.
fn connection_failed(service: &str, source: sqlx::Error) -> DbError {
    metrics::counter!("mercato_db_connection_errors_total", "service" => service.to_owned()).increment(1);
    tracing::warn!(service, error = %source, "cannot connect to the database");
    DbError::Connect { service: service.to_owned(), source }
}

/// The limits every PostgreSQL session of a service runs under, unless the database URL's own `options` (or
/// `PGOPTIONS`) set them:
/// - a transaction left idle for a minute is ended by the server, its session closed and its locks released. Only
///   a fault leaves one so (a task stopped between two statements of a transaction); until then its row locks
///   would stall every later writer of those rows, for a product's stock row every checkout of that product;
/// - a statement waits at most 30 seconds for a lock, then fails (SQLSTATE 55P03) instead of waiting for ever
///   behind such a holder. Calls have shorter deadlines than that; a migration that cannot take its table's lock
///   fails the start, which is retried, instead of queueing every query of that table behind it.
///
/// No statement timeout: reports, audits and rebuilds may legitimately run long on a big shop.
pub const SESSION_LIMITS: [(&str, &str); 2] = [("idle_in_transaction_session_timeout", "60s"), ("lock_timeout", "30s")];

/// The statement that sets each of [`SESSION_LIMITS`] that `options` do not set already (None when they set them
/// all). Set by a statement once connected, not sent as startup options: a pooler such as PgBouncer refuses
/// startup options it does not know, and behind one in transaction mode the server connections a service's
/// clients share all get the same values anyway.
fn session_limits_statement(options: &PgConnectOptions) -> Option<String> {
    let given = options.get_options().unwrap_or_default();
    let missing: Vec<String> = SESSION_LIMITS
        .iter()
        .filter(|(name, _)| !given.contains(name))
        .map(|(name, value)| format!("set_config('{name}', '{value}', false)"))
        .collect();
    (!missing.is_empty()).then(|| format!("SELECT {}", missing.join(", ")))
}

/// Puts a connection made outside a [`Db`]'s pool (with `options`) under [`SESSION_LIMITS`], as the pool does
/// with each of its own.
pub(crate) async fn limit_session(
    connection: &mut PgConnection,
    options: &PgConnectOptions,
) -> Result<(), sqlx::Error> {
    if let Some(statement) = session_limits_statement(options) {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(connection).await?;
    }
    Ok(())
}

/// The name of a service's database on a shared PostgreSQL server.
pub fn database_name(service: &str) -> String {
    format!("mercato_{service}")
}

impl Db {
    /// Opens the database of `service` as the settings say: its own URL, else its database on the shared
    /// PostgreSQL server, else `<data dir>/<service>.db`.
    pub async fn open(settings: &Settings, service: &str) -> Result<Self, DbError> {
        if let Some(url) = settings.service_database_urls.get(service) {
            if url.starts_with("sqlite:") {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(|source| DbError::Url { service: service.to_owned(), source })?;
                return Self::open_sqlite(options, service).await;
            }
            let options = PgConnectOptions::from_str(url)
                .map_err(|source| DbError::Url { service: service.to_owned(), source })?;
            let name = options.get_database().map_or_else(|| database_name(service), str::to_owned);
            return Self::open_postgres_database(options, &name, service).await;
        }
        if let Some(url) = &settings.database_url {
            return Self::open_postgres_server(url, &database_name(service), service).await;
        }
        std::fs::create_dir_all(&settings.data_dir)
            .map_err(|source| DbError::DataDir { path: settings.data_dir.display().to_string(), source })?;
        let options = SqliteConnectOptions::new().filename(settings.data_dir.join(format!("{service}.db")));
        Self::open_sqlite(options, service).await
    }

    /// Opens database `name` on the PostgreSQL server at `server_url`, creating it if missing.
    pub async fn open_postgres_server(server_url: &str, name: &str, service: &str) -> Result<Self, DbError> {
        let server = PgConnectOptions::from_str(server_url)
            .map_err(|source| DbError::Url { service: service.to_owned(), source })?;
        Self::open_postgres_database(server, name, service).await
    }

    async fn open_postgres_database(server: PgConnectOptions, name: &str, service: &str) -> Result<Self, DbError> {
        let connect_err = |source| connection_failed(service, source);
        let mut admin = server.clone().database("postgres").connect().await.map_err(connect_err)?;
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut admin)
            .await
            .map_err(connect_err)?;
        if exists.is_none() {
            // The name is ours (mercato_<service> or a test name), never user input; quoted all the same.
            let create = format!("CREATE DATABASE \"{}\"", name.replace('"', ""));
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut admin).await {
                // Another replica may have created it between our check and our create.
                let raced = e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "42P04");
                if !raced {
                    return Err(connect_err(e));
                }
            }
        }
        let _ = admin.close().await;
        Self::open_postgres(server.database(name), service).await
    }

    async fn open_postgres(options: PgConnectOptions, service: &str) -> Result<Self, DbError> {
        let limits = session_limits_statement(&options);
        let pool = check_when_idle(PgPoolOptions::new())
            .after_connect(move |connection, _| {
                let limits = limits.clone();
                Box::pin(async move {
                    if let Some(statement) = limits {
                        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(connection).await?;
                    }
                    Ok(())
                })
            })
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.log_statements(tracing::log::LevelFilter::Debug))
            .await
            .map_err(|source| connection_failed(service, source))?;
        let db = Db::Postgres(pool);
        db.watch(service);
        Ok(db)
    }

    async fn open_sqlite(options: SqliteConnectOptions, service: &str) -> Result<Self, DbError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .log_statements(tracing::log::LevelFilter::Debug);
        let pool = check_when_idle(SqlitePoolOptions::new())
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| connection_failed(service, source))?;
        let db = Db::Sqlite(pool);
        db.watch(service);
        Ok(db)
    }

    /// Watches the pool until it is closed: every [`WATCH_INTERVAL`] it takes a connection (counting a
    /// failure in `mercato_db_connection_errors_total{service}`, which the alert rules watch) and reports the
    /// pool's size and idle connections (`mercato_db_pool_connections{service,state}`).
    fn watch(&self, service: &str) {
        // Outside a runtime (never in the services) there is nothing to watch with.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (db, service) = (self.clone(), service.to_owned());
        runtime.spawn(async move {
            loop {
                let (size, idle, closed) = with_db!(&db, pool => (pool.size(), pool.num_idle(), pool.is_closed()));
                if closed {
                    return;
                }
                metrics::gauge!("mercato_db_pool_connections", "service" => service.clone(), "state" => "open")
                    .set(f64::from(size));
                metrics::gauge!("mercato_db_pool_connections", "service" => service.clone(), "state" => "idle")
                    .set(idle as f64);
                tokio::time::sleep(WATCH_INTERVAL).await;
                let acquired = with_db!(&db, pool => pool.acquire().await.map(drop));
                if let Err(e) = acquired
                    && !matches!(e, sqlx::Error::PoolClosed)
                {
                    connection_failed(&service, e);
                }
            }
        });
    }

    /// Applies the service's embedded migrations that have not run yet.
    pub async fn migrate(&self, migrator: &Migrator, service: &str) -> Result<(), DbError> {
        let result = with_db!(self, pool => migrator.run(pool).await);
        result.map_err(|source| DbError::Migrate { service: service.to_owned(), source })
    }

    /// `"sqlite"` or `"postgres"`, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        with_db!(self, pool => pool.close().await)
    }
}

/// Starts the transactions of services: every transaction they open may write, so on SQLite it takes the write
/// lock at once.
///
/// SQLite's plain `BEGIN` is deferred: a transaction that reads before it writes reads from the snapshot of its
/// first statement, and when another connection commits before its first write (the outbox relay marking events
/// sent, say), that write fails at once with `SQLITE_BUSY`; the busy timeout cannot help, as the snapshot is
/// stale, not locked. `BEGIN IMMEDIATE` takes the write lock first, so writers wait their turn (up to the busy
/// timeout) instead. PostgreSQL needs nothing of the kind: its row locks and `UPDATE` re-checks order writers.
/// The workspace's clippy.toml forbids `Pool::begin`, so no transaction starts the other way by accident.
pub trait BeginWrite {
    /// The engine of the pool.
    type Database: sqlx::Database;

    /// Takes a connection and starts a transaction on it that may write (`BEGIN IMMEDIATE` on SQLite).
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Database>, sqlx::Error>> + Send;
}

impl BeginWrite for SqlitePool {
    type Database = sqlx::Sqlite;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Database = sqlx::Postgres;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        #[allow(clippy::disallowed_methods)] // The one place it is meant.
        self.begin().await
    }
}

/// Ends a transaction by its outcome: commits when `result` is Ok, rolls back otherwise, and hands `result`
/// back (a failed commit or rollback becomes the error instead).
pub async fn finish<DB: sqlx::Database, T, E: From<sqlx::Error>>(
    tx: sqlx::Transaction<'_, DB>,
    result: Result<T, E>,
) -> Result<T, E> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            tx.rollback().await?;
            Err(e)
        }
    }
}

/// How many times in all [`retry_conflicts`] runs a transaction that keeps being aborted for a conflict.
pub const CONFLICT_ATTEMPTS: u32 = 4;

/// Whether `error` (or one of its sources: a service's own error wrapping a `sqlx::Error` answers too) says the
/// database aborted the transaction to resolve a conflict with another one: PostgreSQL's `deadlock_detected`
/// (40P01) and `serialization_failure` (40001). Nothing of that transaction was written, and running it again
/// normally succeeds: the remedy the database asks its clients for.
pub fn is_conflict(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(sqlx::Error::Database(database)) = error.downcast_ref::<sqlx::Error>() {
            return matches!(database.code().as_deref(), Some("40P01" | "40001"));
        }
        cause = error.source();
    }
    false
}

/// Runs `transaction` (one whole transaction, begin to commit, whose only effects are in the database) and runs it
/// again when the database aborted it for a conflict with another ([`is_conflict`]), up to [`CONFLICT_ATTEMPTS`]
/// runs in all; any other outcome, and the last run's conflict, is returned as it is.
///
/// On PostgreSQL two transactions that take the same rows in different orders (two different sign-outs of one
/// session, say) deadlock, and the server aborts one of them; without this its caller would see an internal error
/// for what is only bad timing. Each retry waits a few random milliseconds first (more each time), by when the
/// winner has usually committed. SQLite never aborts a transaction so: its writers take turns from their
/// `BEGIN IMMEDIATE`. Every retry counts in `mercato_db_conflict_retries_total{service}`.
pub async fn retry_conflicts<T, E, F, Fut>(service: &'static str, mut transaction: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    let mut attempt = 1;
    loop {
        match transaction().await {
            Err(error) if attempt < CONFLICT_ATTEMPTS && is_conflict(&error) => {
                tracing::warn!(service, attempt, %error, "transaction aborted for a conflict with another: running it again");
                metrics::counter!("mercato_db_conflict_retries_total", "service" => service).increment(1);
                let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 1..=10 * u64::from(attempt));
                tokio::time::sleep(Duration::from_millis(pause)).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// `$first, $first+1, …`: `count` numbered parameters for a statement built at run time (an `IN (…)` list, a row
/// of values), in the syntax both engines read.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// Appends ` AND <condition> $n` to `sql` for each of `conditions` whose value is given (a listing's optional
/// filters: `("status =", Some("FAILED"))`), numbering from `$1`; returns those values in order, to bind before
/// any later parameter (whose number is one more than their count).
pub fn and_given<'a>(sql: &mut String, conditions: &[(&str, Option<&'a str>)]) -> Vec<&'a str> {
    let mut values = Vec::new();
    for (condition, value) in conditions {
        if let Some(value) = value {
            values.push(*value);
            sql.push_str(&format!(" AND {condition} ${}", values.len()));
        }
    }
    values
}

/// `$1, $2, …`: one numbered parameter per column of `columns` (a comma-separated list), for the `VALUES` of an
/// `INSERT` whose binder binds every column in that order.
pub fn values_for(columns: &str) -> String {
    placeholders(1, columns.split(',').count())
}

/// A query and its arguments on either engine: what a service's typed binders take and return
/// (`fn bind_order<'q, DB>(query: Query<'q, DB>, order: &'q Order) -> Query<'q, DB>`), so that one binder serves
/// the SQLite statement and the PostgreSQL one.
pub type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>;

/// Whether an error is a violation of a unique constraint (on either engine).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|e| e.is_unique_violation())
}

/// Whether an INSERT (its `execute` result) went in: false when it met a unique constraint (the row exists
/// already), the error otherwise. Only for statements outside a transaction: on PostgreSQL the violation aborts
/// the transaction it happens in.
pub fn inserted<T>(result: Result<T, sqlx::Error>) -> Result<bool, sqlx::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether an error is a violation of a foreign key (on either engine; SQLite enforces them in every pool this
/// module opens).
pub fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|e| e.is_foreign_key_violation())
}

/// The case-folded copy of `text` that a searchable column keeps beside it (`name_key` beside `name`): the
/// lower case of every letter, as [`like_pattern`] folds the query. Folded here rather than by SQL's `LOWER`,
/// which in SQLite folds ASCII letters only.
pub fn case_key(text: &str) -> String {
    text.to_lowercase()
}

/// Runs `delete`, a DELETE of at most `$2` rows older than `$1` (`DELETE FROM t WHERE id IN (SELECT id FROM t
/// WHERE time < $1 LIMIT $2)`), with `batch` rows a statement until one deletes fewer; returns how many rows in
/// all. Short statements keep locks and the write-ahead log small while a large backlog goes; replicas doing it
/// at once delete each row once.
pub async fn delete_in_batches(db: &Db, delete: &'static str, before: i64, batch: i64) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let rows = with_db!(db, pool => {
            sqlx::query(delete).bind(before).bind(batch).execute(pool).await?.rows_affected()
        });
        deleted += rows;
        if rows < u64::try_from(batch).unwrap_or(0) {
            return Ok(deleted);
        }
    }
}

/// Writes the [`case_key`]s of rows stored before a migration added the key columns: in `table` (whose primary
/// key is the text column `id`), each `(column, key column)` of `columns` for the rows whose first key column is
/// still empty, so its column must never be empty (a name, a question). A batch of rows per transaction; returns
/// how many rows. Meant for start-up, after migrating and before serving; several replicas doing it at once write
/// the same values.
pub async fn fill_case_keys(db: &Db, table: &str, columns: &[(&str, &str)]) -> Result<usize, sqlx::Error> {
    use sqlx::Row;
    let Some((_, marker)) = columns.first() else { return Ok(0) };
    let sources: Vec<&str> = columns.iter().map(|(column, _)| *column).collect();
    let select = format!("SELECT id, {} FROM {table} WHERE {marker} = '' LIMIT 500", sources.join(", "));
    let sets: Vec<String> = columns.iter().enumerate().map(|(i, (_, key))| format!("{key} = ${}", i + 1)).collect();
    let update = format!("UPDATE {table} SET {} WHERE id = ${}", sets.join(", "), columns.len() + 1);
    let mut filled = 0;
    loop {
        let batch = with_db!(db, pool => {
            let mut tx = pool.begin_write().await?;
            let rows = sqlx::query(sqlx::AssertSqlSafe(select.clone())).fetch_all(&mut *tx).await?;
            for row in &rows {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(update.clone()));
                for i in 1..=columns.len() {
                    query = query.bind(case_key(&row.try_get::<String, _>(i)?));
                }
                query.bind(row.try_get::<String, _>(0)?).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            rows.len()
        });
        filled += batch;
        if batch == 0 {
            return Ok(filled);
        }
    }
}

/// A case-insensitive `LIKE` pattern matching `query` anywhere, with `%`, `_` and the escape character `!`
/// escaped: use with `column_key LIKE $n ESCAPE '!'` on a column kept by [`case_key`] (or `LOWER(column)` for
/// ASCII-only text such as SKUs). `None` for an empty query.
pub fn like_pattern(query: &str) -> Option<String> {
    if query.is_empty() {
        return None;
    }
    let mut pattern = String::with_capacity(query.len() + 2);
    pattern.push('%');
    for c in query.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '!') {
            pattern.push('!');
        }
        pattern.push(c);
    }
    pattern.push('%');
    Some(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_conditions_are_numbered_in_order() {
        let mut sql = String::from("SELECT * FROM t WHERE 1 = 1");
        let values = and_given(&mut sql, &[("a =", Some("x")), ("b =", None), ("id <", Some("y"))]);
        assert_eq!(sql, "SELECT * FROM t WHERE 1 = 1 AND a = $1 AND id < $2");
        assert_eq!(values, ["x", "y"]);
    }

    #[test]
    fn case_keys_fold_every_letter_as_patterns_do() {
        assert_eq!(case_key("Äpfel & ÖL"), "äpfel & öl");
        assert_eq!(like_pattern("ÄPFEL").as_deref(), Some("%äpfel%"));
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern(""), None);
        assert_eq!(like_pattern("Tea").as_deref(), Some("%tea%"));
        assert_eq!(like_pattern("50%_off!").as_deref(), Some("%50!%!_off!!%"));
    }
}
