//! Recording a transaction on PostgreSQL in as few round trips as its rules allow (every captured payment and
//! every refund records one). SQLite runs the same rules a statement at a time (`Store::try_record`).
//!
//! The transaction row, its metadata and its `ledger.transaction.recorded` event are one statement, which also
//! reads the accounts' currencies; the balances then move one account at a time in account-id order, so that
//! concurrent transactions lock the same few hot accounts in the same order (one statement updating several
//! rows locks them in whatever order its plan visits them, and two such statements could deadlock). The last
//! balance moves in the statement that inserts the postings.
//!
//! The usual transaction (a payment's or a refund's: each posting on an account of its own, no reversal) is
//! recorded by one statement on its own, without BEGIN and COMMIT ([`RECORD_AT_ONCE_SQL`]): it locks its accounts
//! in account-id order (`SELECT … ORDER BY id FOR UPDATE`, which sorts before it locks), checks their currencies
//! and the balances' range on the locked rows, and writes only when every posting passes. A refusal writes nothing
//! and goes the transactional way, which says why.

use std::collections::HashMap;

use platform::db::{BeginWrite, finish};
use platform::error::FieldViolation;
use platform::events::OutboxEntry;
use sqlx::{PgPool, Row};

use super::{Attempt, PostingRow, balance_overflow, balance_update};
use crate::domain::{self, AccountRef, BalanceGuard, NewTransaction, Posting};
use crate::error::Error;

/// The transaction ($1 id, $2 description, $3 what it reverses, $4 actor, $5 time), its metadata ($6 keys, $7
/// values) and its event ($8 to $14), in one statement that also returns whether the row is new (a used id, or
/// an original reversed before, writes nothing) and the ids and currencies of the accounts $15.
static RECORD_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH recorded AS (INSERT INTO transactions (id, description, reverses_transaction_id, actor, create_time) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id), \
         described AS (INSERT INTO transaction_metadata (transaction_id, meta_key, meta_value) \
         SELECT recorded.id, entry.meta_key, entry.meta_value FROM recorded, \
         unnest($6::text[], $7::text[]) AS entry (meta_key, meta_value)), \
         published AS ({}) \
         SELECT EXISTS (SELECT 1 FROM recorded), \
         ARRAY(SELECT id FROM accounts WHERE id = ANY($15) ORDER BY id), \
         ARRAY(SELECT currency FROM accounts WHERE id = ANY($15) ORDER BY id)",
        OutboxEntry::insert_from("recorded", 8)
    )
});

/// A transaction without a reversal, whose postings each name another account, in one statement: the
/// transaction ($1 to $7 as in [`RECORD_SQL`], $3 NULL) and its event ($8 to $14); its accounts $15 locked in id
/// order; its postings as arrays ($16 lines, $17 accounts, $18 currencies, $19 amounts, and each balance's bound
/// $20, an upper one where $21 says so, else a lower one: [`BalanceGuard`], checked here as `BalanceGuard::holds`
/// checks it). Writes only when every account is there in
/// the posting's currency with its balance within the bound; returns whether they were, and whether the row is new
/// (a used id writes nothing).
static RECORD_AT_ONCE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH locked AS (SELECT id, currency, balance_minor FROM accounts WHERE id = ANY($15) ORDER BY id FOR UPDATE), \
         posting AS (SELECT * FROM unnest($16::int[], $17::text[], $18::text[], $19::bigint[], $20::bigint[], \
         $21::bool[]) AS p (line, account_id, currency, amount_minor, bound, at_most)), \
         ready AS (SELECT COUNT(*) = (SELECT COUNT(*) FROM posting) \
         AND COALESCE(bool_and(locked.currency = posting.currency \
         AND CASE WHEN posting.at_most THEN locked.balance_minor <= posting.bound \
         ELSE locked.balance_minor >= posting.bound END), false) AS ok \
         FROM posting JOIN locked ON locked.id = posting.account_id), \
         recorded AS (INSERT INTO transactions (id, description, reverses_transaction_id, actor, create_time) \
         SELECT $1, $2, $3, $4, $5 FROM ready WHERE ok ON CONFLICT DO NOTHING RETURNING id), \
         described AS (INSERT INTO transaction_metadata (transaction_id, meta_key, meta_value) \
         SELECT recorded.id, entry.meta_key, entry.meta_value FROM recorded, \
         unnest($6::text[], $7::text[]) AS entry (meta_key, meta_value)), \
         published AS ({}), \
         moved AS (UPDATE accounts SET balance_minor = accounts.balance_minor + posting.amount_minor, \
         entry_count = accounts.entry_count + 1 FROM posting \
         WHERE accounts.id = posting.account_id AND EXISTS (SELECT 1 FROM recorded) \
         RETURNING posting.line, accounts.id, posting.currency, posting.amount_minor, accounts.entry_count, \
         accounts.balance_minor), \
         posted AS (INSERT INTO postings (transaction_id, line, account_id, currency, amount_minor, account_seq, \
         balance_after_minor, create_time) \
         SELECT $1, line, id, currency, amount_minor, entry_count, balance_minor, $5 FROM moved) \
         SELECT (SELECT ok FROM ready), EXISTS (SELECT 1 FROM recorded)",
        OutboxEntry::insert_from("recorded", 8)
    )
});

/// Moves the last posting's balance (`balance_update`'s $1 to $3) and inserts every posting of transaction $4 at
/// time $5: the others as arrays ($6 lines, $7 accounts, $8 currencies, $9 amounts, $10 account sequence numbers,
/// $11 balances after), the last as line $12 in currency $13 with what its UPDATE returned. Nothing is inserted
/// when that UPDATE's guard refused the amount.
fn insert_postings_sql(last_balance_update: &str) -> String {
    format!(
        "WITH moved AS ({last_balance_update}) \
         INSERT INTO postings (transaction_id, line, account_id, currency, amount_minor, account_seq, \
         balance_after_minor, create_time) \
         SELECT $4, p.line, p.account_id, p.currency, p.amount_minor, p.account_seq, p.balance_after_minor, $5 \
         FROM unnest($6::int[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[]) \
         AS p (line, account_id, currency, amount_minor, account_seq, balance_after_minor) \
         WHERE EXISTS (SELECT 1 FROM moved) \
         UNION ALL SELECT $4, $12, $2, $13, $1, entry_count, balance_minor, $5 FROM moved"
    )
}

/// Records `t` (validated) with its postings moved in `order` (by account id); `account_ids` are its accounts,
/// sorted and without repeats.
pub(super) async fn try_record(
    pool: &PgPool,
    t: &NewTransaction,
    actor: &str,
    now: i64,
    order: &[usize],
    account_ids: &[&str],
) -> Result<Attempt, Error> {
    let Some((&last, earlier)) = order.split_last() else {
        return Err(Error::invalid(FieldViolation::new("postings", "a transaction needs postings")));
    };
    // Each way builds the event it writes (with an id of its own): the one-statement way usually writes it.
    let event = || OutboxEntry::new(crate::NAME, &crate::events::transaction_recorded(t, actor));
    if t.reverses.is_none() && account_ids.len() == t.postings.len() {
        match record_at_once(pool, t, actor, now, event(), account_ids).await? {
            (true, true) => return Ok(Attempt::Recorded),
            (true, false) => return Ok(Attempt::Conflict),
            // A missing account, another currency or a balance out of range: the transactional way says which.
            (false, _) => {}
        }
    }
    let mut tx = pool.begin_write().await?;
    let query = sqlx::query(RECORD_SQL.as_str())
        .bind(&t.id)
        .bind(&t.description)
        .bind(t.reverses.as_deref())
        .bind(actor)
        .bind(now)
        .bind(t.metadata.keys().collect::<Vec<_>>())
        .bind(t.metadata.values().collect::<Vec<_>>());
    let written = event().bind(query).bind(account_ids).fetch_one(&mut *tx).await.and_then(|row| {
        Ok((row.try_get::<bool, _>(0)?, row.try_get::<Vec<String>, _>(1)?, row.try_get::<Vec<String>, _>(2)?))
    });
    let (ids, currencies) = match written {
        Err(e) => {
            tx.rollback().await?;
            return Err(e.into());
        }
        Ok((false, _, _)) => {
            tx.rollback().await?;
            return Ok(Attempt::Conflict);
        }
        Ok((true, ids, currencies)) => (ids, currencies),
    };
    let result = async {
        check_reversal!(&mut *tx, t);
        let accounts: HashMap<String, AccountRef> =
            ids.into_iter().zip(currencies).map(|(id, currency)| (id, AccountRef { currency })).collect();
        domain::check_postings_against_accounts(&t.postings, &accounts).map_err(Error::InvalidArgument)?;
        let mut moved = Vec::with_capacity(earlier.len());
        for &line in earlier {
            let p = &t.postings[line];
            let (balance_after, seq) = move_balance!(&mut *tx, line, p);
            moved.push((line, p, seq, balance_after));
        }
        let p = &t.postings[last];
        let (sql, bound) = balance_update(p);
        let inserted = sqlx::query(sqlx::AssertSqlSafe(insert_postings_sql(sql)))
            .bind(p.amount_minor)
            .bind(&p.account_id)
            .bind(bound)
            .bind(&t.id)
            .bind(now)
            .bind(moved.iter().map(|(line, ..)| i32::try_from(*line).unwrap_or(i32::MAX)).collect::<Vec<_>>())
            .bind(moved.iter().map(|(_, p, ..)| p.account_id.as_str()).collect::<Vec<_>>())
            .bind(moved.iter().map(|(_, p, ..)| p.currency.as_str()).collect::<Vec<_>>())
            .bind(moved.iter().map(|(_, p, ..)| p.amount_minor).collect::<Vec<_>>())
            .bind(moved.iter().map(|(_, _, seq, _)| *seq).collect::<Vec<_>>())
            .bind(moved.iter().map(|(.., balance_after)| *balance_after).collect::<Vec<_>>())
            .bind(i32::try_from(last).unwrap_or(i32::MAX))
            .bind(&p.currency)
            .execute(&mut *tx)
            .await?;
        if inserted.rows_affected() == 0 {
            return Err(balance_overflow(last, &p.account_id));
        }
        Ok(())
    }
    .await;
    finish(tx, result).await?;
    Ok(Attempt::Recorded)
}

/// Records `t` by [`RECORD_AT_ONCE_SQL`]: whether every posting passed, and whether the row is new.
async fn record_at_once(
    pool: &PgPool,
    t: &NewTransaction,
    actor: &str,
    now: i64,
    event: OutboxEntry,
    account_ids: &[&str],
) -> Result<(bool, bool), Error> {
    let guards: Vec<BalanceGuard> = t.postings.iter().map(|p| BalanceGuard::for_amount(p.amount_minor)).collect();
    let query = sqlx::query(RECORD_AT_ONCE_SQL.as_str())
        .bind(&t.id)
        .bind(&t.description)
        .bind(None::<&str>)
        .bind(actor)
        .bind(now)
        .bind(t.metadata.keys().collect::<Vec<_>>())
        .bind(t.metadata.values().collect::<Vec<_>>());
    let row = event
        .bind(query)
        .bind(account_ids)
        .bind((0..t.postings.len()).map(|line| i32::try_from(line).unwrap_or(i32::MAX)).collect::<Vec<_>>())
        .bind(t.postings.iter().map(|p| p.account_id.as_str()).collect::<Vec<_>>())
        .bind(t.postings.iter().map(|p| p.currency.as_str()).collect::<Vec<_>>())
        .bind(t.postings.iter().map(|p| p.amount_minor).collect::<Vec<_>>())
        .bind(
            guards
                .iter()
                .map(|g| match g {
                    BalanceGuard::AtMost(bound) | BalanceGuard::AtLeast(bound) => *bound,
                })
                .collect::<Vec<_>>(),
        )
        .bind(guards.iter().map(|g| matches!(g, BalanceGuard::AtMost(_))).collect::<Vec<_>>())
        .fetch_one(pool)
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}
