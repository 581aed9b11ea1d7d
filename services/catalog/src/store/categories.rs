//! The SQL of categories: those an editor described, and those products merely name.

use platform::db::{BeginWrite, Db, finish, is_unique_violation};
use platform::with_db;

use super::Store;
use crate::domain::categories::{CategoryFields, MAX_CATEGORIES};
use crate::error::{CATEGORY_LIMIT, Error};

/// A category as listed, with how many products for sale name it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CategoryRow {
    /// The slug products name.
    pub slug: String,
    /// The name to show (the slug when undescribed).
    pub name: String,
    /// The description.
    pub description: String,
    /// Smaller first.
    pub position: i32,
    /// Products for sale naming it, a group of variants once (as lists show it: its base).
    pub product_count: i64,
    /// Whether an editor described it.
    pub described: bool,
}

/// A described category with its count of products for sale, `$1` its slug.
const ONE_CATEGORY: &str = "SELECT c.slug, c.name, c.description, c.position, \
     (SELECT COUNT(*) FROM products p WHERE p.category = c.slug AND p.active = TRUE AND p.variant_of IS NULL) \
     AS product_count, \
     TRUE AS described FROM categories c WHERE c.slug = $1";

fn category_not_found(slug: &str) -> Error {
    Error::NotFound(format!("category {slug} is not described"))
}

impl Store {
    /// Every category: the described ones by position and slug, then the slugs only products name, by slug.
    pub async fn categories(&self) -> Result<Vec<CategoryRow>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, CategoryRow>(
                "SELECT c.slug, c.name, c.description, c.position, COUNT(p.id) AS product_count, TRUE AS described \
                 FROM categories c LEFT JOIN products p ON p.category = c.slug AND p.active = TRUE \
                 AND p.variant_of IS NULL \
                 GROUP BY c.slug, c.name, c.description, c.position \
                 UNION ALL \
                 SELECT p.category, p.category, '', 0, COUNT(*), FALSE FROM products p \
                 WHERE p.active = TRUE AND p.variant_of IS NULL AND NOT EXISTS (SELECT 1 FROM categories c WHERE c.slug = p.category) \
                 GROUP BY p.category \
                 ORDER BY described DESC, position, slug",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// Describes category `slug`; ALREADY_EXISTS when it is, FAILED_PRECONDITION when [`MAX_CATEGORIES`] are.
    ///
    /// The count and the insert are one statement; on PostgreSQL concurrent creations take turns on a lock first,
    /// else two at the limit's edge would both count one place left (SQLite's one writer already takes turns).
    pub async fn create_category(&self, slug: &str, fields: &CategoryFields, now: i64) -> Result<CategoryRow, Error> {
        let take_turns = match &self.db {
            Db::Postgres(_) => Some("SELECT pg_advisory_xact_lock(hashtext('mercato.catalog.categories'))"),
            Db::Sqlite(_) => None,
        };
        let inserted = with_db!(&self.db, pool => {
            async {
                let mut tx = pool.begin_write().await?;
                if let Some(lock) = take_turns {
                    sqlx::query(lock).execute(&mut *tx).await?;
                }
                let inserted = sqlx::query(
                    "INSERT INTO categories (slug, name, description, position, create_time, update_time) \
                     SELECT $1, $2, $3, $4, $5, $5 WHERE (SELECT COUNT(*) FROM categories) < $6",
                )
                .bind(slug)
                .bind(&fields.name)
                .bind(&fields.description)
                .bind(fields.position)
                .bind(now)
                .bind(MAX_CATEGORIES)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok::<_, sqlx::Error>(inserted)
            }
            .await
        });
        match inserted {
            Ok(0) => Err(Error::FailedPrecondition {
                reason: CATEGORY_LIMIT,
                message: format!("the shop describes {MAX_CATEGORIES} categories already"),
            }),
            Ok(_) => self.category(slug).await?.ok_or_else(|| category_not_found(slug)),
            Err(e) if is_unique_violation(&e) => {
                Err(Error::AlreadyExists(format!("category {slug} is described already")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The described category `slug`, with its count.
    pub async fn category(&self, slug: &str) -> Result<Option<CategoryRow>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, CategoryRow>(ONE_CATEGORY).bind(slug).fetch_optional(pool).await?
        }))
    }

    /// Changes described category `slug` to what `change` makes of its fields, under its row lock.
    pub async fn update_category(
        &self,
        slug: &str,
        now: i64,
        change: impl FnOnce(&CategoryFields) -> Result<CategoryFields, Error>,
    ) -> Result<CategoryRow, Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                let current = sqlx::query_as::<_, (String, String, i32)>(
                    "UPDATE categories SET update_time = update_time WHERE slug = $1 \
                     RETURNING name, description, position",
                )
                .bind(slug)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| category_not_found(slug))?;
                let (name, description, position) = current;
                let next = change(&CategoryFields { name, description, position })?;
                sqlx::query(
                    "UPDATE categories SET name = $1, description = $2, position = $3, update_time = $4 WHERE slug = $5",
                )
                .bind(&next.name)
                .bind(&next.description)
                .bind(next.position)
                .bind(now)
                .bind(slug)
                .execute(&mut *tx)
                .await?;
                Ok::<(), Error>(())
            }
            .await;
            finish(tx, result).await
        })?;
        self.category(slug).await?.ok_or_else(|| category_not_found(slug))
    }

    /// Deletes the description of category `slug`; NOT_FOUND when it has none.
    pub async fn delete_category(&self, slug: &str) -> Result<(), Error> {
        let deleted = with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM categories WHERE slug = $1").bind(slug).execute(pool).await?.rows_affected()
        });
        if deleted == 0 { Err(category_not_found(slug)) } else { Ok(()) }
    }
}
