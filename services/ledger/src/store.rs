//! All SQL of the ledger. Every statement is written once, in the subset SQLite and PostgreSQL share, and
//! run on whichever pool the [`Db`] holds through `with_db!` — except recording a transaction, which on
//! PostgreSQL takes fewer round trips (`store/postgres.rs`).
//!
//! Recording a transaction is one database transaction that writes first: its first statement inserts the
//! transaction row, so a duplicate id collides on the primary key at once (and, on SQLite, the write lock is
//! taken up front instead of failing with SQLITE_BUSY when upgrading). Balances then change by conditional,
//! atomic `UPDATE accounts SET balance_minor = balance_minor + $1 ... RETURNING` statements in account-id
//! order (no deadlocks on PostgreSQL), whose results give each posting its running balance; the postings
//! are inserted in the same database transaction, so a balance is always the sum of its postings.

use std::collections::{BTreeMap, HashMap};

use futures::TryStreamExt;
use platform::db::finish;
use platform::db::{BeginWrite, Db, is_unique_violation};
use platform::error::FieldViolation;
use platform::with_db;

use crate::domain::{
    self, AccountAudit, AccountRef, AccountType, AuditedAccount, AuditedPosting, BalanceGuard, NewAccount,
    NewTransaction, Posting,
};
use crate::error::{ACCOUNT_CODE_TAKEN, BALANCE_OVERFLOW, Error, TRANSACTION_ALREADY_REVERSED, TRANSACTION_ID_REUSED};

const ACCOUNT_COLUMNS: &str = "id, code, name, type AS account_type, currency, balance_minor, create_time";

const CREDIT_OR_DEBIT_AT_MOST: &str = "UPDATE accounts SET balance_minor = balance_minor + $1, \
     entry_count = entry_count + 1 WHERE id = $2 AND balance_minor <= $3 RETURNING balance_minor, entry_count";
const CREDIT_OR_DEBIT_AT_LEAST: &str = "UPDATE accounts SET balance_minor = balance_minor + $1, \
     entry_count = entry_count + 1 WHERE id = $2 AND balance_minor >= $3 RETURNING balance_minor, entry_count";

/// Checks, inside the recording transaction, that a reversal names a recorded transaction and negates exactly its
/// postings (a macro: it runs on either engine's transaction).
macro_rules! check_reversal {
    ($conn:expr, $t:expr) => {{
        let t: &NewTransaction = $t;
        if let Some(original) = &t.reverses {
            let exists = sqlx::query_scalar::<_, String>("SELECT id FROM transactions WHERE id = $1")
                .bind(original)
                .fetch_optional(&mut *$conn)
                .await?;
            if exists.is_none() {
                return Err(Error::invalid(FieldViolation::new(
                    "reverses_transaction_id",
                    format!("transaction {original} does not exist"),
                )));
            }
            let postings = sqlx::query_as::<_, PostingRow>(
                "SELECT account_id, currency, amount_minor FROM postings WHERE transaction_id = $1 ORDER BY line",
            )
            .bind(original)
            .fetch_all(&mut *$conn)
            .await?;
            let postings: Vec<Posting> = postings.into_iter().map(Posting::from).collect();
            if !domain::is_exact_reversal(&postings, &t.postings) {
                return Err(Error::invalid(FieldViolation::new(
                    "postings",
                    format!("must be exactly the postings of transaction {original}, negated"),
                )));
            }
        }
    }};
}

/// Moves the balance of posting `line` (`p`) inside the recording transaction and evaluates to the account's
/// balance after it and the posting's sequence number in the account; refuses a move that would overflow (a
/// macro: it runs on either engine's transaction).
macro_rules! move_balance {
    ($conn:expr, $line:expr, $p:expr) => {{
        let (line, p): (usize, &Posting) = ($line, $p);
        let (sql, bound) = balance_update(p);
        // fetch_all, not fetch_optional: the statement must run to completion on SQLite.
        let moved = sqlx::query_as::<_, (i64, i64)>(sql)
            .bind(p.amount_minor)
            .bind(&p.account_id)
            .bind(bound)
            .fetch_all(&mut *$conn)
            .await?;
        let Some(&(balance_after, seq)) = moved.first() else {
            return Err(balance_overflow(line, &p.account_id));
        };
        (balance_after, seq)
    }};
}

mod journal;
mod postgres;

/// The UPDATE that moves the balance of posting `p`'s account ($1 amount, $2 account, $3 the guard's bound, from
/// [`BalanceGuard`]) and the bound.
fn balance_update(p: &Posting) -> (&'static str, i64) {
    match BalanceGuard::for_amount(p.amount_minor) {
        BalanceGuard::AtMost(bound) => (CREDIT_OR_DEBIT_AT_MOST, bound),
        BalanceGuard::AtLeast(bound) => (CREDIT_OR_DEBIT_AT_LEAST, bound),
    }
}

/// The refusal of posting `line`, whose amount would overflow its account's balance.
fn balance_overflow(line: usize, account_id: &str) -> Error {
    Error::FailedPrecondition {
        reason: BALANCE_OVERFLOW,
        message: format!(
            "postings[{line}] would take the balance of account {account_id} beyond the range of a signed 64-bit \
             integer"
        ),
    }
}

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// UUIDv7.
    pub id: String,
    /// Unique code.
    pub code: String,
    /// Name shown to people.
    pub name: String,
    /// Kind of account.
    pub account_type: AccountType,
    /// ISO 4217 code.
    pub currency: String,
    /// Raw signed sum of the account's postings.
    pub balance_minor: i64,
    /// Microseconds since the epoch.
    pub create_time: i64,
}

#[derive(sqlx::FromRow)]
struct RawAccount {
    id: String,
    code: String,
    name: String,
    account_type: String,
    currency: String,
    balance_minor: i64,
    create_time: i64,
}

impl TryFrom<RawAccount> for AccountRow {
    type Error = Error;

    fn try_from(r: RawAccount) -> Result<Self, Error> {
        let account_type = AccountType::parse(&r.account_type)
            .ok_or_else(|| Error::Corrupt(format!("account {} has type {}", r.id, r.account_type)))?;
        Ok(Self {
            id: r.id,
            code: r.code,
            name: r.name,
            account_type,
            currency: r.currency,
            balance_minor: r.balance_minor,
            create_time: r.create_time,
        })
    }
}

/// A stored posting as seen from its account: a line of the account's statement.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EntryRow {
    /// Its transaction.
    pub transaction_id: String,
    /// The account.
    pub account_id: String,
    /// The posting's currency (the account's).
    pub currency: String,
    /// Signed amount, positive = debit.
    pub amount_minor: i64,
    /// The account's balance right after this posting.
    pub balance_after_minor: i64,
    /// Position in the account's postings, from 1.
    pub account_seq: i64,
    /// The transaction's description.
    pub description: String,
    /// Microseconds since the epoch.
    pub create_time: i64,
}

/// A stored transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTransaction {
    /// Its content, as it was recorded.
    pub transaction: NewTransaction,
    /// Microseconds since the epoch.
    pub create_time: i64,
}

#[derive(sqlx::FromRow)]
struct TransactionHead {
    description: String,
    reverses_transaction_id: Option<String>,
    create_time: i64,
}

#[derive(sqlx::FromRow)]
struct PostingRow {
    account_id: String,
    currency: String,
    amount_minor: i64,
}

impl From<PostingRow> for Posting {
    fn from(r: PostingRow) -> Self {
        Posting { account_id: r.account_id, currency: r.currency, amount_minor: r.amount_minor }
    }
}

#[derive(sqlx::FromRow)]
struct AccountAuditRow {
    id: String,
    code: String,
    currency: String,
    balance_minor: i64,
    entry_count: i64,
    transaction_id: Option<String>,
    posting_currency: Option<String>,
    amount_minor: Option<i64>,
    balance_after_minor: Option<i64>,
    account_seq: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct TransactionAuditRow {
    id: String,
    account_id: Option<String>,
    currency: Option<String>,
    amount_minor: Option<i64>,
}

/// What ListAccounts asks of the store.
#[derive(Debug, Clone, Default)]
pub struct AccountQuery {
    /// Only accounts of this type.
    pub account_type: Option<AccountType>,
    /// Only accounts in this currency, when not empty.
    pub currency: String,
    /// Start after the account with this code.
    pub after_code: Option<String>,
    /// At most this many rows.
    pub limit: i64,
}

enum Arg {
    Text(String),
    Int(i64),
}

/// How an attempt to record a transaction ended.
enum Attempt {
    /// Recorded now.
    Recorded,
    /// A unique constraint refused the transaction row: the id, or the original of a reversal, is taken.
    Conflict,
}

/// The ledger's tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Opens an account, or returns the existing account with the same code when its type and currency are
    /// the same (ALREADY_EXISTS when they differ). The boolean says whether the account is new.
    pub async fn create_account(&self, id: &str, account: &NewAccount, now: i64) -> Result<(AccountRow, bool), Error> {
        let inserted = with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO accounts (id, code, name, type, currency, balance_minor, entry_count, create_time) \
                 VALUES ($1, $2, $3, $4, $5, 0, 0, $6)",
            )
            .bind(id)
            .bind(&account.code)
            .bind(&account.name)
            .bind(account.account_type.as_str())
            .bind(&account.currency)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
        });
        match inserted {
            Ok(()) => Ok((
                AccountRow {
                    id: id.to_owned(),
                    code: account.code.clone(),
                    name: account.name.clone(),
                    account_type: account.account_type,
                    currency: account.currency.clone(),
                    balance_minor: 0,
                    create_time: now,
                },
                true,
            )),
            Err(e) if is_unique_violation(&e) => {
                let existing = self
                    .account_by_code(&account.code)
                    .await?
                    .ok_or_else(|| Error::Corrupt(format!("account code {} collided but is absent", account.code)))?;
                if existing.account_type == account.account_type && existing.currency == account.currency {
                    Ok((existing, false))
                } else {
                    Err(Error::AlreadyExists {
                        reason: ACCOUNT_CODE_TAKEN,
                        message: format!(
                            "account {} already exists as a {} account in {}",
                            account.code,
                            existing.account_type.as_str(),
                            existing.currency
                        ),
                    })
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The account `id`, if it exists.
    pub async fn get_account(&self, id: &str) -> Result<Option<AccountRow>, Error> {
        self.one_account("id", id).await
    }

    /// The account with `code`, if it exists.
    pub async fn account_by_code(&self, code: &str) -> Result<Option<AccountRow>, Error> {
        self.one_account("code", code).await
    }

    async fn one_account(&self, column: &'static str, value: &str) -> Result<Option<AccountRow>, Error> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE {column} = $1");
        let row = with_db!(&self.db, pool => {
            sqlx::query_as::<_, RawAccount>(sqlx::AssertSqlSafe(sql)).bind(value).fetch_optional(pool).await?
        });
        row.map(AccountRow::try_from).transpose()
    }

    /// Accounts ordered by code, after the cursor, filtered as asked.
    pub async fn list_accounts(&self, q: &AccountQuery) -> Result<Vec<AccountRow>, Error> {
        let mut sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE 1 = 1");
        let mut args = Vec::new();
        let mut arg = |a: Arg| {
            args.push(a);
            args.len()
        };
        if let Some(t) = q.account_type {
            let n = arg(Arg::Text(t.as_str().to_owned()));
            sql.push_str(&format!(" AND type = ${n}"));
        }
        if !q.currency.is_empty() {
            let n = arg(Arg::Text(q.currency.clone()));
            sql.push_str(&format!(" AND currency = ${n}"));
        }
        if let Some(code) = &q.after_code {
            let n = arg(Arg::Text(code.clone()));
            sql.push_str(&format!(" AND code > ${n}"));
        }
        let n = arg(Arg::Int(q.limit));
        sql.push_str(&format!(" ORDER BY code LIMIT ${n}"));
        let rows = with_db!(&self.db, pool => {
            let mut query = sqlx::query_as::<_, RawAccount>(sqlx::AssertSqlSafe(sql));
            for a in &args {
                query = match a {
                    Arg::Text(s) => query.bind(s.as_str()),
                    Arg::Int(i) => query.bind(*i),
                };
            }
            query.fetch_all(pool).await?
        });
        rows.into_iter().map(AccountRow::try_from).collect()
    }

    /// The postings of account `account_id`, newest first, before sequence number `before` when given.
    pub async fn list_entries(
        &self,
        account_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<EntryRow>, Error> {
        let rows = with_db!(&self.db, pool => {
            sqlx::query_as::<_, EntryRow>(
                "SELECT p.transaction_id, p.account_id, p.currency, p.amount_minor, p.balance_after_minor, \
                 p.account_seq, t.description, p.create_time \
                 FROM postings p JOIN transactions t ON t.id = p.transaction_id \
                 WHERE p.account_id = $1 AND p.account_seq < $2 ORDER BY p.account_seq DESC LIMIT $3",
            )
            .bind(account_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// The transaction `id` with its postings and metadata, if it exists.
    pub async fn get_transaction(&self, id: &str) -> Result<Option<StoredTransaction>, Error> {
        // A transaction row commits together with its postings and metadata and never changes after: once
        // the row is visible, so is the rest.
        let found = with_db!(&self.db, pool => {
            let head = sqlx::query_as::<_, TransactionHead>(
                "SELECT description, reverses_transaction_id, create_time FROM transactions WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?;
            match head {
                None => None,
                Some(head) => {
                    let postings = sqlx::query_as::<_, PostingRow>(
                        "SELECT account_id, currency, amount_minor FROM postings WHERE transaction_id = $1 ORDER BY line",
                    )
                    .bind(id)
                    .fetch_all(pool)
                    .await?;
                    let metadata = sqlx::query_as::<_, (String, String)>(
                        "SELECT meta_key, meta_value FROM transaction_metadata WHERE transaction_id = $1",
                    )
                    .bind(id)
                    .fetch_all(pool)
                    .await?;
                    Some((head, postings, metadata))
                }
            }
        });
        Ok(found.map(|(head, postings, metadata)| StoredTransaction {
            transaction: NewTransaction {
                id: id.to_owned(),
                description: head.description,
                postings: postings.into_iter().map(Posting::from).collect(),
                metadata: metadata.into_iter().collect::<BTreeMap<_, _>>(),
                reverses: head.reverses_transaction_id,
            },
            create_time: head.create_time,
        }))
    }

    /// The id of the transaction that reversed `original`, if any.
    async fn reversed_by(&self, original: &str) -> Result<Option<String>, Error> {
        let id = with_db!(&self.db, pool => {
            sqlx::query_scalar::<_, String>("SELECT id FROM transactions WHERE reverses_transaction_id = $1")
                .bind(original)
                .fetch_optional(pool)
                .await?
        });
        Ok(id)
    }

    /// Records `transaction` (already validated) and moves the balances of its accounts, all or nothing.
    /// An id recorded before returns the stored transaction when the content is the same (posting nothing
    /// more) and fails with TRANSACTION_ID_REUSED when it differs.
    pub async fn record(
        &self,
        transaction: &NewTransaction,
        actor: &str,
        now: i64,
    ) -> Result<StoredTransaction, Error> {
        // A conflict always leaves a committed row behind (transactions are never deleted), so the second
        // round decides; the bound only guards against the impossible.
        for _ in 0..3 {
            match self.try_record(transaction, actor, now).await? {
                Attempt::Recorded => {
                    return Ok(StoredTransaction { transaction: transaction.clone(), create_time: now });
                }
                Attempt::Conflict => {
                    if let Some(stored) = self.get_transaction(&transaction.id).await? {
                        if stored.transaction == *transaction {
                            return Ok(stored);
                        }
                        return Err(Error::AlreadyExists {
                            reason: TRANSACTION_ID_REUSED,
                            message: format!(
                                "transaction {} was already recorded with other content; choose a new id",
                                transaction.id
                            ),
                        });
                    }
                    if let Some(original) = &transaction.reverses
                        && let Some(by) = self.reversed_by(original).await?
                    {
                        return Err(Error::FailedPrecondition {
                            reason: TRANSACTION_ALREADY_REVERSED,
                            message: format!("transaction {original} was already reversed by transaction {by}"),
                        });
                    }
                }
            }
        }
        Err(Error::Corrupt(format!("transaction {} keeps conflicting with nothing", transaction.id)))
    }

    async fn try_record(&self, t: &NewTransaction, actor: &str, now: i64) -> Result<Attempt, Error> {
        // Balances change in account-id order, so concurrent transactions lock accounts in the same order.
        let mut order: Vec<usize> = (0..t.postings.len()).collect();
        order.sort_by(|a, b| t.postings[*a].account_id.cmp(&t.postings[*b].account_id));
        let mut account_ids: Vec<&str> = t.postings.iter().map(|p| p.account_id.as_str()).collect();
        account_ids.sort_unstable();
        account_ids.dedup();
        let pool = match &self.db {
            Db::Postgres(pool) => return postgres::try_record(pool, t, actor, now, &order, &account_ids).await,
            Db::Sqlite(pool) => pool,
        };
        let attempt = {
            let mut tx = pool.begin_write().await?;
            // The transaction row first: a duplicate id collides here, before anything else is written.
            let inserted = sqlx::query(
                "INSERT INTO transactions (id, description, reverses_transaction_id, actor, create_time) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&t.id)
            .bind(&t.description)
            .bind(t.reverses.as_deref())
            .bind(actor)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map(|_| ());
            match inserted {
                Err(e) if is_unique_violation(&e) => {
                    tx.rollback().await?;
                    Attempt::Conflict
                }
                Err(e) => {
                    tx.rollback().await?;
                    return Err(e.into());
                }
                Ok(_) => {
                    let result = async {
                        check_reversal!(&mut *tx, t);
                        // One statement for every account of the transaction, one for all its postings, one for
                        // its metadata: a payment's capture is a handful of round trips, whatever its size.
                        let mut query = sqlx::QueryBuilder::new("SELECT id, currency FROM accounts WHERE id IN (");
                        let mut ids = query.separated(", ");
                        for id in &account_ids {
                            ids.push_bind(*id);
                        }
                        query.push(")");
                        let found: Vec<(String, String)> = query.build_query_as().fetch_all(&mut *tx).await?;
                        let accounts: HashMap<String, AccountRef> =
                            found.into_iter().map(|(id, currency)| (id, AccountRef { currency })).collect();
                        domain::check_postings_against_accounts(&t.postings, &accounts)
                            .map_err(Error::InvalidArgument)?;
                        // Everything that locks no shared row first: the accounts' rows are locked from their
                        // UPDATE to the commit, and every payment posts to the same few accounts.
                        if !t.metadata.is_empty() {
                            let mut insert = sqlx::QueryBuilder::new(
                                "INSERT INTO transaction_metadata (transaction_id, meta_key, meta_value) ",
                            );
                            insert.push_values(&t.metadata, |mut row, (key, value)| {
                                row.push_bind(&t.id).push_bind(key).push_bind(value);
                            });
                            insert.build().execute(&mut *tx).await?;
                        }
                        platform::events::enqueue(
                            &mut *tx,
                            crate::NAME,
                            &crate::events::transaction_recorded(t, actor),
                        )
                        .await?;
                        let mut stored = Vec::with_capacity(order.len());
                        for &line in &order {
                            let p = &t.postings[line];
                            let (balance_after, seq) = move_balance!(&mut *tx, line, p);
                            stored.push((line, p, seq, balance_after));
                        }
                        let mut insert = sqlx::QueryBuilder::new(
                            "INSERT INTO postings (transaction_id, line, account_id, currency, amount_minor, \
                             account_seq, balance_after_minor, create_time) ",
                        );
                        insert.push_values(&stored, |mut row, (line, p, seq, balance_after)| {
                            row.push_bind(&t.id)
                                .push_bind(i32::try_from(*line).unwrap_or(i32::MAX))
                                .push_bind(&p.account_id)
                                .push_bind(&p.currency)
                                .push_bind(p.amount_minor)
                                .push_bind(*seq)
                                .push_bind(*balance_after)
                                .push_bind(now);
                        });
                        insert.build().execute(&mut *tx).await?;
                        Ok(())
                    }
                    .await;
                    finish(tx, result).await?;
                    Attempt::Recorded
                }
            }
        };
        Ok(attempt)
    }

    /// Recomputes the books from the postings and returns every inconsistency, in words: a balance that is
    /// not the sum of its account's postings, a running balance that is not the sum so far, postings numbered
    /// with a gap or a repeat or counted wrong, a posting in
    /// another currency than its account, a transaction that does not sum to zero per currency or has fewer
    /// than two postings. Each pass is one statement, so it reads one consistent snapshot on either engine.
    pub async fn audit(&self) -> Result<Vec<String>, Error> {
        let mut violations = Vec::new();

        let mut current: Option<(String, AccountAudit)> = None;
        let mut visit_account = |row: AccountAuditRow, violations: &mut Vec<String>| {
            if current.as_ref().is_none_or(|(id, _)| *id != row.id) {
                if let Some((_, audit)) = current.take() {
                    violations.extend(audit.finish());
                }
                let account = AuditedAccount {
                    id: row.id.clone(),
                    code: row.code,
                    currency: row.currency,
                    balance_minor: row.balance_minor,
                    entry_count: row.entry_count,
                };
                current = Some((row.id, AccountAudit::new(account)));
            }
            if let (Some((_, audit)), Some(transaction_id), Some(currency), Some(amount), Some(after), Some(seq)) = (
                current.as_mut(),
                row.transaction_id,
                row.posting_currency,
                row.amount_minor,
                row.balance_after_minor,
                row.account_seq,
            ) {
                audit.push(&AuditedPosting {
                    transaction_id,
                    currency,
                    amount_minor: amount,
                    balance_after_minor: after,
                    account_seq: seq,
                });
            }
        };
        const ACCOUNTS: &str = "SELECT a.id, a.code, a.currency, a.balance_minor, a.entry_count, p.transaction_id, \
             p.currency AS posting_currency, p.amount_minor, p.balance_after_minor, p.account_seq \
             FROM accounts a LEFT JOIN postings p ON p.account_id = a.id ORDER BY a.id, p.account_seq";
        with_db!(&self.db, pool => {
            let mut rows = sqlx::query_as::<_, AccountAuditRow>(ACCOUNTS).fetch(pool);
            while let Some(row) = rows.try_next().await? {
                visit_account(row, &mut violations);
            }
        });
        if let Some((_, audit)) = current.take() {
            violations.extend(audit.finish());
        }

        let mut current: Option<(String, Vec<Posting>)> = None;
        let mut visit_transaction = |row: TransactionAuditRow, violations: &mut Vec<String>| {
            if current.as_ref().is_none_or(|(id, _)| *id != row.id) {
                if let Some((id, postings)) = current.take() {
                    violations.extend(domain::audit_transaction(&id, &postings));
                }
                current = Some((row.id, Vec::new()));
            }
            if let (Some((_, postings)), Some(account_id), Some(currency), Some(amount_minor)) =
                (current.as_mut(), row.account_id, row.currency, row.amount_minor)
            {
                postings.push(Posting { account_id, currency, amount_minor });
            }
        };
        const TRANSACTIONS: &str = "SELECT t.id, p.account_id, p.currency, p.amount_minor \
             FROM transactions t LEFT JOIN postings p ON p.transaction_id = t.id ORDER BY t.id, p.line";
        with_db!(&self.db, pool => {
            let mut rows = sqlx::query_as::<_, TransactionAuditRow>(TRANSACTIONS).fetch(pool);
            while let Some(row) = rows.try_next().await? {
                visit_transaction(row, &mut violations);
            }
        });
        if let Some((id, postings)) = current.take() {
            violations.extend(domain::audit_transaction(&id, &postings));
        }
        Ok(violations)
    }
}
