//! The SQL of the FAQ: entries in `faq_entries`, listed by category, position and id.

use platform::db::{BeginWrite, finish, like_pattern};
use platform::with_db;

use super::Store;
use crate::domain::faq::{EntryFields, FaqCursor};
use crate::error::Error;

/// The columns of `faq_entries`, in [`FaqEntry`]'s order (a macro, so statements are built at compile time).
macro_rules! faq_columns {
    () => {
        "id, question, answer, category, position, published, create_time, update_time"
    };
}

/// A stored FAQ entry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FaqEntry {
    /// UUIDv7.
    pub id: String,
    /// The question.
    pub question: String,
    /// The answer.
    pub answer: String,
    /// Its category's slug.
    pub category: String,
    /// Its place within the category.
    pub position: i32,
    /// Whether customers see it.
    pub published: bool,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
}

impl FaqEntry {
    /// The fields an update may change, as they are.
    pub fn fields(&self) -> EntryFields {
        EntryFields {
            question: self.question.clone(),
            answer: self.answer.clone(),
            category: self.category.clone(),
            position: self.position,
            published: self.published,
        }
    }
}

/// Which entries a listing returns.
#[derive(Debug, Clone, Default)]
pub struct FaqQuery {
    /// Drafts too (agents), or only published entries.
    pub drafts: bool,
    /// Only this category.
    pub category: Option<String>,
    /// Only entries whose question or answer holds this text (any case).
    pub text: Option<String>,
    /// Only those after this one (the page token).
    pub after: Option<FaqCursor>,
    /// At most this many.
    pub limit: i64,
}

impl Store {
    /// Stores a new entry `id`.
    pub async fn create_faq_entry(&self, id: &str, fields: &EntryFields, now: i64) -> Result<FaqEntry, Error> {
        let entry = FaqEntry {
            id: id.to_owned(),
            question: fields.question.clone(),
            answer: fields.answer.clone(),
            category: fields.category.clone(),
            position: fields.position,
            published: fields.published,
            create_time: now,
            update_time: now,
        };
        with_db!(&self.db, pool => {
            sqlx::query(concat!(
                "INSERT INTO faq_entries (",
                faq_columns!(),
                ", question_key, answer_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9)"
            ))
                .bind(&entry.id)
                .bind(&entry.question)
                .bind(&entry.answer)
                .bind(&entry.category)
                .bind(entry.position)
                .bind(entry.published)
                .bind(now)
                .bind(platform::db::case_key(&entry.question))
                .bind(platform::db::case_key(&entry.answer))
                .execute(pool)
                .await?;
        });
        Ok(entry)
    }

    /// Writes the case-folded keys of the entries stored before they had them (migration 0005); returns how
    /// many. Run at start-up, before serving.
    pub async fn fill_missing_faq_case_keys(&self) -> Result<usize, Error> {
        let keys = [("question", "question_key"), ("answer", "answer_key")];
        Ok(platform::db::fill_case_keys(&self.db, "faq_entries", &keys).await?)
    }

    /// Entry `id`, if it exists.
    pub async fn faq_entry(&self, id: &str) -> Result<Option<FaqEntry>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, FaqEntry>(concat!("SELECT ", faq_columns!(), " FROM faq_entries WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Changes entry `id` to what `change` makes of it, in one transaction that writes its row first (so two
    /// updates of one entry apply one after the other); NOT_FOUND when there is none.
    pub async fn update_faq_entry(
        &self,
        id: &str,
        now: i64,
        change: impl Fn(&FaqEntry) -> Result<EntryFields, Error>,
    ) -> Result<FaqEntry, Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                let current = sqlx::query_as::<_, FaqEntry>(concat!(
                    "UPDATE faq_entries SET update_time = update_time WHERE id = $1 RETURNING ",
                    faq_columns!()
                ))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::faq_entry_not_found(id))?;
                let next = change(&current)?;
                sqlx::query(
                    "UPDATE faq_entries SET question = $1, answer = $2, category = $3, position = $4, published = $5, \
                     update_time = $6, question_key = $8, answer_key = $9 WHERE id = $7",
                )
                .bind(&next.question)
                .bind(&next.answer)
                .bind(&next.category)
                .bind(next.position)
                .bind(next.published)
                .bind(now)
                .bind(id)
                .bind(platform::db::case_key(&next.question))
                .bind(platform::db::case_key(&next.answer))
                .execute(&mut *tx)
                .await?;
                Ok(FaqEntry {
                    question: next.question,
                    answer: next.answer,
                    category: next.category,
                    position: next.position,
                    published: next.published,
                    update_time: now,
                    ..current
                })
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Removes entry `id`; false when there was none.
    pub async fn delete_faq_entry(&self, id: &str) -> Result<bool, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM faq_entries WHERE id = $1").bind(id).execute(pool).await?.rows_affected() > 0
        }))
    }

    /// Entries by category, position and id, filtered as asked.
    pub async fn list_faq_entries(&self, q: &FaqQuery) -> Result<Vec<FaqEntry>, Error> {
        let mut sql = concat!("SELECT ", faq_columns!(), " FROM faq_entries WHERE 1 = 1").to_owned();
        let mut texts: Vec<String> = Vec::new();
        let mut placeholder = |value: String| {
            texts.push(value);
            format!("${}", texts.len())
        };
        if !q.drafts {
            sql.push_str(" AND published = TRUE");
        }
        if let Some(category) = &q.category {
            let p = placeholder(category.clone());
            sql.push_str(&format!(" AND category = {p}"));
        }
        if let Some(pattern) = q.text.as_deref().and_then(like_pattern) {
            let p = placeholder(pattern);
            sql.push_str(&format!(" AND (question_key LIKE {p} ESCAPE '!' OR answer_key LIKE {p} ESCAPE '!')"));
        }
        if let Some(after) = &q.after {
            // The position is a number the service parsed from the token: written into the statement, not bound,
            // so every placeholder is text.
            let (c, n) = (placeholder(after.category.clone()), after.position);
            let i = placeholder(after.id.clone());
            sql.push_str(&format!(
                " AND (category > {c} OR (category = {c} AND (position > {n} OR (position = {n} AND id > {i}))))"
            ));
        }
        sql.push_str(&format!(" ORDER BY category, position, id LIMIT {}", q.limit.max(0)));
        Ok(with_db!(&self.db, pool => {
            let mut query = sqlx::query_as::<_, FaqEntry>(sqlx::AssertSqlSafe(sql));
            for text in &texts {
                query = query.bind(text.as_str());
            }
            query.fetch_all(pool).await?
        }))
    }
}
