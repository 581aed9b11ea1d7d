//! All SQL of the users service. Every statement is written once, in the subset SQLite and PostgreSQL share,
//! and run on whichever pool the [`Db`] holds through `with_db!`.
//!
//! Every change to a customer's data is one transaction that writes their `profiles` row first
//! (`lock_profile!`, which makes an empty profile when there is none yet): on PostgreSQL that locks the
//! customer's data, on SQLite it takes the write lock up front, so a read-modify-write of a profile, the
//! address book's limit and its single default hold under concurrency.

use api::mercato::orders::v1::Address;
use platform::db::{BeginWrite, Db, finish};
use platform::with_db;

use crate::domain::{AddressFields, MAX_ADDRESSES, ProfileFields};
use crate::error::{ADDRESS_BOOK_FULL, Error};

/// The columns of `addresses` an `AddressRow` reads (a macro, so statements are built at compile time).
macro_rules! address_columns {
    () => {
        "id, label, name, line1, line2, city, region, postal_code, country, is_default, create_time, update_time"
    };
}

/// Makes the customer's profile if missing (empty) and writes its row, so the transaction holds the
/// customer's data (a macro: it runs on either engine's transaction).
macro_rules! lock_profile {
    ($conn:expr, $user_id:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO profiles (user_id, email, display_name, phone, locale, create_time, update_time) \
             VALUES ($1, '', '', '', '', $2, $2) \
             ON CONFLICT (user_id) DO UPDATE SET update_time = profiles.update_time",
        )
        .bind($user_id)
        .bind($now)
        .execute($conn)
        .await?
    };
}

/// A stored profile.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Profile {
    /// The account's user id.
    pub user_id: String,
    /// As registered; empty until the registration arrived.
    pub email: String,
    /// Name shown to people.
    pub display_name: String,
    /// International form, or empty.
    pub phone: String,
    /// BCP 47 tag, or empty.
    pub locale: String,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
}

impl Profile {
    /// The fields its owner changes.
    pub fn fields(&self) -> ProfileFields {
        ProfileFields {
            display_name: self.display_name.clone(),
            phone: self.phone.clone(),
            locale: self.locale.clone(),
        }
    }
}

/// A stored address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedAddress {
    /// Its id.
    pub id: String,
    /// Label, address and default flag.
    pub fields: AddressFields,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
}

#[derive(sqlx::FromRow)]
struct AddressRow {
    id: String,
    label: String,
    name: String,
    line1: String,
    line2: String,
    city: String,
    region: String,
    postal_code: String,
    country: String,
    is_default: bool,
    create_time: i64,
    update_time: i64,
}

impl From<AddressRow> for SavedAddress {
    fn from(r: AddressRow) -> Self {
        SavedAddress {
            id: r.id,
            fields: AddressFields {
                label: r.label,
                address: Address {
                    name: r.name,
                    line1: r.line1,
                    line2: r.line2,
                    city: r.city,
                    region: r.region,
                    postal_code: r.postal_code,
                    country: r.country,
                },
                is_default: r.is_default,
            },
            create_time: r.create_time,
            update_time: r.update_time,
        }
    }
}

/// A registration as `user.registered` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The new user's id.
    pub user_id: String,
    /// Their email address.
    pub email: String,
    /// Their name.
    pub display_name: String,
    /// Their language.
    pub locale: String,
}

/// The users service's tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Makes the profile of a new account for event `event_id`, once. When the customer changed their profile
    /// before the registration arrived, their name and language stay; the email is the account's, unless a
    /// later change of it arrived first (a redelivered registration must not bring the old address back).
    pub async fn register(&self, event_id: &str, registration: &Registration, now: i64) -> Result<bool, Error> {
        platform::once_per_event!(&self.db, crate::events::CONSUMER, event_id, |tx| {
            sqlx::query(
                "INSERT INTO profiles (user_id, email, display_name, phone, locale, create_time, update_time) \
                 VALUES ($1, $2, $3, '', $4, $5, $5) \
                 ON CONFLICT (user_id) DO UPDATE SET \
                 email = CASE WHEN profiles.email = '' THEN excluded.email ELSE profiles.email END, \
                 display_name = CASE WHEN profiles.display_name = '' THEN excluded.display_name \
                 ELSE profiles.display_name END, \
                 locale = CASE WHEN profiles.locale = '' THEN excluded.locale ELSE profiles.locale END",
            )
            .bind(&registration.user_id)
            .bind(&registration.email)
            .bind(&registration.display_name)
            .bind(&registration.locale)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        })
    }

    /// Sets the address of `user_id`'s profile to `email`, the account's new one, for the event `event_id`,
    /// once (false for a redelivery). A profile not made yet is made with it; the registration then fills in
    /// the rest.
    pub async fn change_email(&self, event_id: &str, user_id: &str, email: &str, now: i64) -> Result<bool, Error> {
        platform::once_per_event!(&self.db, crate::events::CONSUMER, event_id, |tx| {
            sqlx::query(
                "INSERT INTO profiles (user_id, email, display_name, phone, locale, create_time, update_time) \
                 VALUES ($1, $2, '', '', '', $3, $3) \
                 ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, update_time = excluded.update_time",
            )
            .bind(user_id)
            .bind(email)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        })
    }

    /// Erases the profile and the address book of `user_id` for the event `event_id`, once (false for a
    /// redelivery).
    pub async fn erase(&self, event_id: &str, user_id: &str) -> Result<bool, Error> {
        platform::once_per_event!(&self.db, crate::events::CONSUMER, event_id, |tx| {
            for table in ["addresses", "profiles"] {
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE user_id = $1")))
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
            }
        })
    }

    /// The profile of `user_id`, if it exists.
    pub async fn profile(&self, user_id: &str) -> Result<Option<Profile>, Error> {
        let profile = with_db!(&self.db, pool => {
            sqlx::query_as::<_, Profile>(
                "SELECT user_id, email, display_name, phone, locale, create_time, update_time FROM profiles \
                 WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(profile)
    }

    /// Changes the profile of `user_id` (made empty first if missing) to what `change` makes of its current
    /// fields, in one transaction; returns the profile after.
    pub async fn update_profile(
        &self,
        user_id: &str,
        now: i64,
        change: impl FnOnce(&ProfileFields) -> Result<ProfileFields, Error>,
    ) -> Result<Profile, Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                lock_profile!(&mut *tx, user_id, now);
                let current = sqlx::query_as::<_, Profile>(
                    "SELECT user_id, email, display_name, phone, locale, create_time, update_time FROM profiles \
                     WHERE user_id = $1",
                )
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await?;
                let next = change(&current.fields())?;
                sqlx::query(
                    "UPDATE profiles SET display_name = $1, phone = $2, locale = $3, update_time = $4 \
                     WHERE user_id = $5",
                )
                .bind(&next.display_name)
                .bind(&next.phone)
                .bind(&next.locale)
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
                Ok(Profile {
                    display_name: next.display_name,
                    phone: next.phone,
                    locale: next.locale,
                    update_time: now,
                    ..current
                })
            }
            .await;
            finish(tx, result).await
        })
    }

    /// The addresses of `user_id`: the default first, then the newest.
    pub async fn addresses(&self, user_id: &str) -> Result<Vec<SavedAddress>, Error> {
        let rows = with_db!(&self.db, pool => {
            sqlx::query_as::<_, AddressRow>(concat!(
                "SELECT ",
                address_columns!(),
                " FROM addresses WHERE user_id = $1 ORDER BY is_default DESC, id DESC"
            ))
            .bind(user_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(SavedAddress::from).collect())
    }

    /// Address `id` of `user_id`; NOT_FOUND when the customer has no such address.
    pub async fn address(&self, user_id: &str, id: &str) -> Result<SavedAddress, Error> {
        let row = with_db!(&self.db, pool => {
            sqlx::query_as::<_, AddressRow>(concat!(
                "SELECT ",
                address_columns!(),
                " FROM addresses WHERE id = $1 AND user_id = $2"
            ))
            .bind(id)
            .bind(user_id)
            .fetch_optional(pool)
            .await?
        });
        row.map(SavedAddress::from).ok_or_else(|| Error::address_not_found(id))
    }

    /// Saves a new address for `user_id`: the default when asked or when it is the first; FAILED_PRECONDITION
    /// when the book already holds [`MAX_ADDRESSES`].
    pub async fn create_address(&self, user_id: &str, fields: &AddressFields, now: i64) -> Result<SavedAddress, Error> {
        let id = uuid::Uuid::now_v7().to_string();
        let insert = "INSERT INTO addresses (id, user_id, label, name, line1, line2, city, region, postal_code, \
             country, is_default, create_time, update_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)";
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                lock_profile!(&mut *tx, user_id, now);
                let saved = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM addresses WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_one(&mut *tx)
                    .await?;
                if saved >= MAX_ADDRESSES {
                    return Err(Error::FailedPrecondition {
                        reason: ADDRESS_BOOK_FULL,
                        message: format!("an address book holds at most {MAX_ADDRESSES} addresses"),
                    });
                }
                let is_default = fields.is_default || saved == 0;
                if is_default {
                    sqlx::query("UPDATE addresses SET is_default = $1, update_time = $2 WHERE user_id = $3 AND is_default")
                        .bind(false)
                        .bind(now)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                let a = &fields.address;
                sqlx::query(insert)
                    .bind(&id)
                    .bind(user_id)
                    .bind(&fields.label)
                    .bind(&a.name)
                    .bind(&a.line1)
                    .bind(&a.line2)
                    .bind(&a.city)
                    .bind(&a.region)
                    .bind(&a.postal_code)
                    .bind(&a.country)
                    .bind(is_default)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                Ok(SavedAddress {
                    id: id.clone(),
                    fields: AddressFields { is_default, ..fields.clone() },
                    create_time: now,
                    update_time: now,
                })
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Changes address `id` of `user_id` to what `change` makes of its current fields; making it the default
    /// takes the flag from the one that had it. NOT_FOUND when the customer has no such address.
    pub async fn update_address(
        &self,
        user_id: &str,
        id: &str,
        now: i64,
        change: impl FnOnce(&AddressFields) -> Result<AddressFields, Error>,
    ) -> Result<SavedAddress, Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                lock_profile!(&mut *tx, user_id, now);
                let row = sqlx::query_as::<_, AddressRow>(concat!(
                    "SELECT ",
                    address_columns!(),
                    " FROM addresses WHERE id = $1 AND user_id = $2"
                ))
                    .bind(id)
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let current = SavedAddress::from(row.ok_or_else(|| Error::address_not_found(id))?);
                let next = change(&current.fields)?;
                if next.is_default && !current.fields.is_default {
                    sqlx::query("UPDATE addresses SET is_default = $1, update_time = $2 WHERE user_id = $3 AND is_default")
                        .bind(false)
                        .bind(now)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                let a = &next.address;
                sqlx::query(
                    "UPDATE addresses SET label = $1, name = $2, line1 = $3, line2 = $4, city = $5, region = $6, \
                     postal_code = $7, country = $8, is_default = $9, update_time = $10 WHERE id = $11",
                )
                .bind(&next.label)
                .bind(&a.name)
                .bind(&a.line1)
                .bind(&a.line2)
                .bind(&a.city)
                .bind(&a.region)
                .bind(&a.postal_code)
                .bind(&a.country)
                .bind(next.is_default)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                Ok(SavedAddress { fields: next, update_time: now, ..current })
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Deletes address `id` of `user_id`; NOT_FOUND when the customer has no such address.
    pub async fn delete_address(&self, user_id: &str, id: &str) -> Result<(), Error> {
        let deleted = with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM addresses WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if deleted == 0 { Err(Error::address_not_found(id)) } else { Ok(()) }
    }
}
