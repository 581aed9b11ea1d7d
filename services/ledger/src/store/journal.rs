//! The SQL of the journal: transactions newest first, each with its postings and metadata, a page at a time
//! (three statements a page, however long it is).

use std::collections::{BTreeMap, HashMap};

use platform::paging::KeyCursor;
use platform::with_db;

use super::{PostingRow, Store, StoredTransaction};
use crate::domain::{NewTransaction, Posting};
use crate::error::Error;

#[derive(sqlx::FromRow)]
struct JournalHead {
    id: String,
    description: String,
    reverses_transaction_id: Option<String>,
    create_time: i64,
}

#[derive(sqlx::FromRow)]
struct JournalPosting {
    transaction_id: String,
    #[sqlx(flatten)]
    posting: PostingRow,
}

impl Store {
    /// Up to `limit` transactions recorded in `period` (microseconds, start inclusive, end exclusive), newest
    /// first (ties by id, descending), older than the one `before` names (`None`: from the newest).
    pub async fn journal(
        &self,
        period: (i64, i64),
        before: Option<&KeyCursor>,
        limit: i64,
    ) -> Result<Vec<StoredTransaction>, Error> {
        let (time, id) = before.map_or((i64::MAX, ""), |c| (c.key, c.id.as_str()));
        let heads = with_db!(&self.db, pool => {
            sqlx::query_as::<_, JournalHead>(
                "SELECT id, description, reverses_transaction_id, create_time FROM transactions \
                 WHERE create_time >= $4 AND create_time < $5 AND (create_time < $1 OR (create_time = $1 AND id < $2)) \
                 ORDER BY create_time DESC, id DESC LIMIT $3",
            )
            .bind(time)
            .bind(id)
            .bind(limit)
            .bind(period.0)
            .bind(period.1)
            .fetch_all(pool)
            .await?
        });
        if heads.is_empty() {
            return Ok(Vec::new());
        }
        let ids = platform::db::placeholders(1, heads.len());
        let postings_sql = format!(
            "SELECT transaction_id, account_id, currency, amount_minor FROM postings \
             WHERE transaction_id IN ({ids}) ORDER BY transaction_id, line"
        );
        let metadata_sql = format!(
            "SELECT transaction_id, meta_key, meta_value FROM transaction_metadata WHERE transaction_id IN ({ids})"
        );
        let (postings, metadata) = with_db!(&self.db, pool => {
            let mut postings = sqlx::query_as::<_, JournalPosting>(sqlx::AssertSqlSafe(postings_sql));
            let mut metadata = sqlx::query_as::<_, (String, String, String)>(sqlx::AssertSqlSafe(metadata_sql));
            for head in &heads {
                postings = postings.bind(head.id.as_str());
                metadata = metadata.bind(head.id.as_str());
            }
            (postings.fetch_all(pool).await?, metadata.fetch_all(pool).await?)
        });
        let mut postings_of: HashMap<String, Vec<Posting>> = HashMap::new();
        for row in postings {
            postings_of.entry(row.transaction_id).or_default().push(Posting::from(row.posting));
        }
        let mut metadata_of: HashMap<String, BTreeMap<String, String>> = HashMap::new();
        for (transaction_id, key, value) in metadata {
            metadata_of.entry(transaction_id).or_default().insert(key, value);
        }
        Ok(heads
            .into_iter()
            .map(|head| StoredTransaction {
                transaction: NewTransaction {
                    postings: postings_of.remove(&head.id).unwrap_or_default(),
                    metadata: metadata_of.remove(&head.id).unwrap_or_default(),
                    id: head.id,
                    description: head.description,
                    reverses: head.reverses_transaction_id,
                },
                create_time: head.create_time,
            })
            .collect())
    }
}
