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

/// Records that `consumer` handles each of `event_ids` in one statement, on `connection` (in the transaction
/// of their effects: pass `&mut *tx`). Returns the ids not handled before; an id given twice counts once. One
/// parameter per id: keep batches far below SQLite's limit of 32766.
pub async fn first_deliveries<C, DB>(
    connection: &mut C,
    consumer: &str,
    event_ids: &[&str],
) -> Result<std::collections::HashSet<String>, sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> String: sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    // Distinct ids: PostgreSQL refuses a statement whose rows conflict with each other.
    let ids: std::collections::BTreeSet<&str> = event_ids.iter().copied().collect();
    if ids.is_empty() {
        return Ok(std::collections::HashSet::new());
    }
    // `$1` the consumer and `$2` the time in every row, then one id each; RETURNING names the ids that went
    // in: those not handled before.
    let rows: Vec<String> = (0..ids.len()).map(|i| format!("($1, ${}, $2)", i + 3)).collect();
    let sql = format!(
        "INSERT INTO inbox (consumer, event_id, handle_time) VALUES {} \
         ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
        rows.join(", ")
    );
    let mut insert = sqlx::query_scalar::<DB, String>(&sql).bind(consumer.to_owned()).bind(crate::time::now_micros());
    for id in ids {
        insert = insert.bind(id.to_owned());
    }
    let new = insert.fetch_all(connection).await?;
    Ok(new.into_iter().collect())
}
