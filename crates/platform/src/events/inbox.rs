//! The consumer side of exactly-once effects: an event id is recorded in the same transaction as the effect.

/// Records that `consumer` handles `event_id`, through `executor` (the transaction of the effect). Returns
/// `false` when it was handled before: the caller then skips the effect and commits nothing new.
pub async fn first_delivery<'e, E, DB>(executor: E, consumer: &str, event_id: &str) -> Result<bool, sqlx::Error>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> String: sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    // ON CONFLICT DO NOTHING rather than catching the unique violation: on PostgreSQL an error would abort
    // the caller's transaction.
    // RETURNING tells whether a row went in, the same way on both engines.
    let inserted: Option<String> = sqlx::query_scalar(
        "INSERT INTO inbox (consumer, event_id, handle_time) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
    )
    .bind(consumer.to_owned())
    .bind(event_id.to_owned())
    .bind(crate::time::now_micros())
    .fetch_optional(executor)
    .await?;
    Ok(inserted.is_some())
}
