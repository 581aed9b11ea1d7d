//! The SQL of invoices and credit notes: issuing them, each with the next number of its series in the same
//! transaction, and reading them.
//!
//! A series' last number is a row of `invoice_series`, raised by an upsert in the transaction that writes the
//! document: concurrent issuers queue on that row (PostgreSQL's row lock, SQLite's write lock), and a transaction
//! rolled back gives its number back with everything else, so numbers run without gaps.

use platform::db::{BeginWrite, finish, is_unique_violation};
use platform::with_db;

use crate::domain::{Address, Cursor};
use crate::error::Error;
use crate::invoice::{self, Invoice, Issuer, Kind};
use crate::store::{Store, corrupt, tax_part};
use crate::tax::OrderTax;

const COLUMNS: &str = "number, kind, order_id, customer_id, corrected_invoice, refund_id, currency, total_minor, \
     tax_name, tax_rate_basis_points, tax_taxable_minor, tax_minor, reduced_tax_rate_basis_points, \
     reduced_taxable_minor, reduced_tax_minor, issue_time, issuer_name, issuer_line1, issuer_line2, issuer_city, \
     issuer_region, issuer_postal_code, issuer_country, issuer_vat_id";

/// The columns of `invoice_issuer`, in the order of the `issuer_*` columns of `invoices`.
const ISSUER_COLUMNS: &str = "name, line1, line2, city, region, postal_code, country, vat_id";

/// Raises the last number of series $1 (starting it at 1) and answers it with its issue time: $2 (now), or the
/// previous number's when that is later (its issuer read the clock after this one but took the series first), so
/// that numbers and issue times rise together.
const TAKE_NUMBER_SQL: &str = "INSERT INTO invoice_series (series, last_number, last_issue_time) VALUES ($1, 1, $2) \
     ON CONFLICT (series) DO UPDATE SET last_number = invoice_series.last_number + 1, \
     last_issue_time = CASE WHEN invoice_series.last_issue_time > excluded.last_issue_time \
     THEN invoice_series.last_issue_time ELSE excluded.last_issue_time END \
     RETURNING last_number, last_issue_time";

/// The number of order $1's invoice, if it has one.
const INVOICE_OF_ORDER_SQL: &str = "SELECT number FROM invoices WHERE order_id = $1 AND kind = 'invoice'";

/// An order's invoice, numbered $1 and issued at $2, from order $3 as it stands (the columns the invoice shares
/// with the order are the order's, which never change once it is placed) and the issuer as set now, if set.
const ISSUE_INVOICE_SQL: &str = "INSERT INTO invoices (number, kind, order_id, customer_id, currency, total_minor, \
     tax_name, tax_rate_basis_points, tax_taxable_minor, tax_minor, reduced_tax_rate_basis_points, \
     reduced_taxable_minor, reduced_tax_minor, issue_time, issuer_name, issuer_line1, issuer_line2, issuer_city, \
     issuer_region, issuer_postal_code, issuer_country, issuer_vat_id) \
     SELECT $1, 'invoice', o.id, o.customer_id, o.currency, o.total_minor, o.tax_name, o.tax_rate_basis_points, \
     o.tax_taxable_minor, o.tax_minor, o.reduced_tax_rate_basis_points, o.reduced_taxable_minor, \
     o.reduced_tax_minor, $2, COALESCE(i.name, ''), COALESCE(i.line1, ''), COALESCE(i.line2, ''), \
     COALESCE(i.city, ''), COALESCE(i.region, ''), COALESCE(i.postal_code, ''), COALESCE(i.country, ''), \
     COALESCE(i.vat_id, '') \
     FROM orders o LEFT JOIN invoice_issuer i ON i.id = 1 WHERE o.id = $3";

#[derive(sqlx::FromRow)]
struct Row {
    number: String,
    kind: String,
    order_id: String,
    customer_id: String,
    corrected_invoice: String,
    refund_id: String,
    currency: String,
    total_minor: i64,
    tax_name: String,
    tax_rate_basis_points: Option<i64>,
    tax_taxable_minor: i64,
    tax_minor: i64,
    reduced_tax_rate_basis_points: Option<i64>,
    reduced_taxable_minor: i64,
    reduced_tax_minor: i64,
    issue_time: i64,
    issuer_name: String,
    issuer_line1: String,
    issuer_line2: String,
    issuer_city: String,
    issuer_region: String,
    issuer_postal_code: String,
    issuer_country: String,
    issuer_vat_id: String,
}

#[derive(sqlx::FromRow)]
struct IssuerRow {
    name: String,
    line1: String,
    line2: String,
    city: String,
    region: String,
    postal_code: String,
    country: String,
    vat_id: String,
}

/// The issuer as set, with when.
#[derive(sqlx::FromRow)]
struct IssuerSetRow {
    #[sqlx(flatten)]
    issuer: IssuerRow,
    update_time: i64,
}

impl From<IssuerRow> for Issuer {
    fn from(row: IssuerRow) -> Self {
        Self {
            address: Address {
                name: row.name,
                line1: row.line1,
                line2: row.line2,
                city: row.city,
                region: row.region,
                postal_code: row.postal_code,
                country: row.country,
            },
            vat_id: row.vat_id,
        }
    }
}

impl TryFrom<Row> for Invoice {
    type Error = Error;

    fn try_from(row: Row) -> Result<Self, Error> {
        Ok(Self {
            kind: Kind::parse(&row.kind).ok_or_else(|| corrupt("invoice kind", &row.kind))?,
            tax: (!row.tax_name.is_empty()).then(|| OrderTax {
                name: row.tax_name,
                standard: tax_part(row.tax_rate_basis_points, row.tax_taxable_minor, row.tax_minor),
                reduced: tax_part(row.reduced_tax_rate_basis_points, row.reduced_taxable_minor, row.reduced_tax_minor),
            }),
            // An empty name: the shop had not said who issues its invoices.
            issuer: (!row.issuer_name.is_empty()).then_some(Issuer {
                address: Address {
                    name: row.issuer_name,
                    line1: row.issuer_line1,
                    line2: row.issuer_line2,
                    city: row.issuer_city,
                    region: row.issuer_region,
                    postal_code: row.issuer_postal_code,
                    country: row.issuer_country,
                },
                vat_id: row.issuer_vat_id,
            }),
            number: row.number,
            order_id: row.order_id,
            customer_id: row.customer_id,
            corrected_invoice: row.corrected_invoice,
            refund_id: row.refund_id,
            currency: row.currency,
            total_minor: row.total_minor,
            issue_time: row.issue_time,
        })
    }
}

/// Binds who issued a document (the columns of [`ISSUER_COLUMNS`], in order): empty strings for none.
fn bind_issuer<'q, DB>(query: platform::db::Query<'q, DB>, issuer: Option<&'q Issuer>) -> platform::db::Query<'q, DB>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let address = issuer.map(|i| &i.address);
    query
        .bind(address.map_or("", |a| a.name.as_str()))
        .bind(address.map_or("", |a| a.line1.as_str()))
        .bind(address.map_or("", |a| a.line2.as_str()))
        .bind(address.map_or("", |a| a.city.as_str()))
        .bind(address.map_or("", |a| a.region.as_str()))
        .bind(address.map_or("", |a| a.postal_code.as_str()))
        .bind(address.map_or("", |a| a.country.as_str()))
        .bind(issuer.map_or("", |i| i.vat_id.as_str()))
}

/// A refund of a payment, as its `payment.refunded` event tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// The refunds service's id of it.
    pub refund_id: String,
    /// The order paid for.
    pub order_id: String,
    /// The payment refunded.
    pub payment_id: String,
    /// What this refund gave back, in the payment's (the order's) currency.
    pub amount_minor: i64,
}

/// What ListInvoices asks of the store.
#[derive(Debug, Clone, Default)]
pub struct InvoiceQuery {
    /// Only this customer's, when set.
    pub customer_id: Option<String>,
    /// Only this order's, when set.
    pub order_id: Option<String>,
    /// Only this kind, when set.
    pub kind: Option<Kind>,
    /// Start after this document (its issue time and number).
    pub after: Option<Cursor>,
    /// Only those issued in this period (microseconds, start inclusive, end exclusive).
    pub period: (i64, i64),
    /// At most this many rows.
    pub limit: i64,
}

impl Store {
    /// Issues the invoice of order `order_id` at `now`, the next number of the year's series, from the order's
    /// row as it stands, and answers its number; an order invoiced before answers its invoice's number (a saga
    /// resumed after a crash asks again). The saga asks once the stock is sold, just before the move that
    /// confirms the order and whose `order.confirmed` carries the number.
    pub async fn issue_invoice(&self, order_id: &str, now: i64) -> Result<String, Error> {
        with_db!(self.db(), pool => {
            let mut tx = pool.begin_write().await?;
            let result: Result<String, Error> = async {
                let issued: Option<String> =
                    sqlx::query_scalar(INVOICE_OF_ORDER_SQL).bind(order_id).fetch_optional(&mut *tx).await?;
                if let Some(number) = issued {
                    return Ok(number);
                }
                let series = invoice::series(Kind::Invoice, now);
                let (n, issue_time): (i64, i64) =
                    sqlx::query_as(TAKE_NUMBER_SQL).bind(series.as_str()).bind(now).fetch_one(&mut *tx).await?;
                let number = invoice::number(&series, n);
                let inserted =
                    sqlx::query(ISSUE_INVOICE_SQL).bind(&number).bind(issue_time).bind(order_id).execute(&mut *tx).await;
                match inserted {
                    // Another runner of the same saga invoiced it meanwhile: this transaction gives its number
                    // back, and the invoice is theirs (read below).
                    Err(e) if is_unique_violation(&e) => Err(Error::AlreadyExists(order_id.to_owned())),
                    Ok(done) if done.rows_affected() == 1 => Ok(number),
                    Ok(_) => Err(Error::NotFound(format!("order {order_id} to invoice not found"))),
                    Err(e) => Err(e.into()),
                }
            }
            .await;
            match finish(tx, result).await {
                Err(Error::AlreadyExists(_)) => {
                    Ok(sqlx::query_scalar::<_, String>(INVOICE_OF_ORDER_SQL).bind(order_id).fetch_one(pool).await?)
                }
                done => done,
            }
        })
    }

    /// Issues the credit note of `refund` at `now`, numbered next in the year's series, for its share of the
    /// order's invoice and its tax ([`invoice::credit_note_tax`]). Answers its number; None when there is nothing
    /// to issue: the order has no invoice (a checkout whose payment was refunded before it was confirmed, an order
    /// confirmed before invoices were issued), or another payment (not the order's) was refunded, or the refund
    /// has its credit note already (a redelivered event).
    pub async fn issue_credit_note(&self, refund: &Refund, now: i64) -> Result<Option<String>, Error> {
        let select_invoice = format!(
            "SELECT {COLUMNS} FROM invoices WHERE order_id = $1 AND kind = 'invoice' \
             AND order_id IN (SELECT id FROM orders WHERE payment_id = $2)"
        );
        let insert = format!("INSERT INTO invoices ({COLUMNS}) VALUES ({})", platform::db::values_for(COLUMNS));
        with_db!(self.db(), pool => {
            let mut tx = pool.begin_write().await?;
            let result: Result<Option<String>, Error> = async {
                let Some(row) = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(select_invoice))
                    .bind(&refund.order_id)
                    .bind(&refund.payment_id)
                    .fetch_optional(&mut *tx)
                    .await?
                else {
                    return Ok(None);
                };
                let issued: Option<String> = sqlx::query_scalar(
                    "SELECT number FROM invoices WHERE refund_id = $1 AND kind = 'credit_note'",
                )
                .bind(&refund.refund_id)
                .fetch_optional(&mut *tx)
                .await?;
                if issued.is_some() {
                    return Ok(None);
                }
                let invoiced = Invoice::try_from(row)?;
                let issuer = sqlx::query_as::<_, IssuerRow>(sqlx::AssertSqlSafe(format!(
                    "SELECT {ISSUER_COLUMNS} FROM invoice_issuer WHERE id = 1"
                )))
                .fetch_optional(&mut *tx)
                .await?
                .map(Issuer::from);
                let amount_minor = refund.amount_minor.clamp(0, invoiced.total_minor);
                let tax = invoiced.tax.as_ref().map(|t| invoice::credit_note_tax(t, invoiced.total_minor, amount_minor));
                let (standard, reduced) = tax.as_ref().map_or((None, None), |t| (t.standard, t.reduced));
                let series = invoice::series(Kind::CreditNote, now);
                let (n, issue_time): (i64, i64) =
                    sqlx::query_as(TAKE_NUMBER_SQL).bind(series.as_str()).bind(now).fetch_one(&mut *tx).await?;
                let number = invoice::number(&series, n);
                let query = sqlx::query(sqlx::AssertSqlSafe(insert))
                    .bind(&number)
                    .bind(Kind::CreditNote.as_str())
                    .bind(&invoiced.order_id)
                    .bind(&invoiced.customer_id)
                    .bind(&invoiced.number)
                    .bind(&refund.refund_id)
                    .bind(&invoiced.currency)
                    .bind(amount_minor)
                    .bind(tax.as_ref().map_or("", |t| t.name.as_str()))
                    .bind(standard.map(|p| i64::from(p.rate_basis_points)))
                    .bind(standard.map_or(0, |p| p.taxable_minor))
                    .bind(standard.map_or(0, |p| p.amount_minor))
                    .bind(reduced.map(|p| i64::from(p.rate_basis_points)))
                    .bind(reduced.map_or(0, |p| p.taxable_minor))
                    .bind(reduced.map_or(0, |p| p.amount_minor))
                    .bind(issue_time);
                let inserted = bind_issuer(query, issuer.as_ref()).execute(&mut *tx).await;
                match inserted {
                    // The same refund's event, handled at the same moment elsewhere, issued it first: this
                    // transaction rolls back with the number it took.
                    Err(e) if is_unique_violation(&e) => Err(Error::AlreadyExists(refund.refund_id.clone())),
                    inserted => {
                        inserted?;
                        Ok(Some(number))
                    }
                }
            }
            .await;
            match finish(tx, result).await {
                Err(Error::AlreadyExists(_)) => Ok(None),
                done => done,
            }
        })
    }

    /// Sets who issues the shop's invoices from now on (`now`); answers it as stored with when it was set.
    pub async fn set_invoice_issuer(&self, issuer: &Issuer, now: i64) -> Result<(Issuer, i64), Error> {
        let sql = format!(
            "INSERT INTO invoice_issuer (id, {ISSUER_COLUMNS}, update_time) VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, line1 = excluded.line1, line2 = excluded.line2, \
             city = excluded.city, region = excluded.region, postal_code = excluded.postal_code, \
             country = excluded.country, vat_id = excluded.vat_id, update_time = excluded.update_time"
        );
        with_db!(self.db(), pool => {
            bind_issuer(sqlx::query(sqlx::AssertSqlSafe(sql)), Some(issuer)).bind(now).execute(pool).await?.rows_affected()
        });
        Ok((issuer.clone(), now))
    }

    /// Who issues the shop's invoices, with when it was set; None until it is.
    pub async fn invoice_issuer(&self) -> Result<Option<(Issuer, i64)>, Error> {
        let sql = format!("SELECT {ISSUER_COLUMNS}, update_time FROM invoice_issuer WHERE id = 1");
        let row = with_db!(self.db(), pool => {
            sqlx::query_as::<_, IssuerSetRow>(sqlx::AssertSqlSafe(sql)).fetch_optional(pool).await?
        });
        Ok(row.map(|row| (Issuer::from(row.issuer), row.update_time)))
    }

    /// What is wrong with the invoices, in words (for `mercato audit`): an order confirmed since invoicing began
    /// (the first invoice's issue time) without its invoice, a series whose numbers have gaps, an invoice whose
    /// credit notes give back more than it charged.
    pub async fn audit_invoices(&self) -> Result<Vec<String>, Error> {
        let (uninvoiced, series, overcredited) = with_db!(self.db(), pool => {
            // The confirming move's log line (a cancellation refused once shipped lands on CONFIRMED too, from
            // the cancel step).
            let uninvoiced = sqlx::query_scalar::<_, String>(
                "SELECT l.order_id FROM saga_log l WHERE l.to_step = 'done' AND l.status = 'CONFIRMED' \
                 AND l.from_step <> 'cancel' \
                 AND l.create_time >= (SELECT MIN(issue_time) FROM invoices WHERE kind = 'invoice') \
                 AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.order_id = l.order_id AND i.kind = 'invoice') \
                 ORDER BY l.order_id",
            )
            .fetch_all(pool)
            .await?;
            let series = sqlx::query_as::<_, (String, i64, i64, Option<i64>)>(
                "SELECT s.series, s.last_number, COUNT(i.number), \
                 MAX(CAST(substr(i.number, length(s.series) + 2) AS BIGINT)) \
                 FROM invoice_series s LEFT JOIN invoices i ON i.number LIKE s.series || '-%' \
                 GROUP BY s.series, s.last_number ORDER BY s.series",
            )
            .fetch_all(pool)
            .await?;
            let overcredited = sqlx::query_as::<_, (String, String, i64, i64)>(
                "SELECT i.number, i.currency, i.total_minor, CAST(SUM(c.total_minor) AS BIGINT) FROM invoices i \
                 JOIN invoices c ON c.corrected_invoice = i.number AND c.kind = 'credit_note' \
                 WHERE i.kind = 'invoice' GROUP BY i.number, i.currency, i.total_minor \
                 HAVING SUM(c.total_minor) > i.total_minor ORDER BY i.number",
            )
            .fetch_all(pool)
            .await?;
            (uninvoiced, series, overcredited)
        });
        let mut problems: Vec<String> =
            uninvoiced.into_iter().map(|id| format!("order {id} was confirmed without an invoice")).collect();
        problems.extend(series.into_iter().filter(|(_, last, count, max)| count != last || *max != Some(*last)).map(
            |(series, last, count, max)| {
                format!(
                    "invoice series {series} has {count} documents numbered up to {} but took {last} numbers",
                    max.unwrap_or(0)
                )
            },
        ));
        problems.extend(overcredited.into_iter().map(|(number, currency, total, credited)| {
            format!("invoice {number} charged {total} {currency} but its credit notes give back {credited}")
        }));
        Ok(problems)
    }

    /// The invoice or credit note numbered `number`, if there is one.
    pub async fn invoice(&self, number: &str) -> Result<Option<Invoice>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM invoices WHERE number = $1");
        let row = with_db!(self.db(), pool => {
            sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql)).bind(number).fetch_optional(pool).await?
        });
        row.map(Invoice::try_from).transpose()
    }

    /// Invoices and credit notes, the latest issued first, after the cursor, filtered as asked.
    pub async fn invoices(&self, q: &InvoiceQuery) -> Result<Vec<Invoice>, Error> {
        let mut sql = format!("SELECT {COLUMNS} FROM invoices WHERE issue_time >= $1 AND issue_time < $2");
        let mut texts = Vec::new();
        let mut text = |value: &str, column: &str, sql: &mut String| {
            texts.push(value.to_owned());
            sql.push_str(&format!(" AND {column} = ${}", texts.len() + 2));
        };
        if let Some(customer) = &q.customer_id {
            text(customer, "customer_id", &mut sql);
        }
        if let Some(order) = &q.order_id {
            text(order, "order_id", &mut sql);
        }
        if let Some(kind) = q.kind {
            text(kind.as_str(), "kind", &mut sql);
        }
        if let Some(after) = &q.after {
            texts.push(after.id.clone());
            // The cursor's time is bound last, after the limit.
            let (number, time) = (texts.len() + 2, texts.len() + 4);
            sql.push_str(&format!(" AND (issue_time < ${time} OR (issue_time = ${time} AND number < ${number}))"));
        }
        sql.push_str(&format!(" ORDER BY issue_time DESC, number DESC LIMIT ${}", texts.len() + 3));
        let rows = with_db!(self.db(), pool => {
            let mut query = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql)).bind(q.period.0).bind(q.period.1);
            for value in &texts {
                query = query.bind(value.as_str());
            }
            query = query.bind(q.limit);
            if let Some(after) = &q.after {
                query = query.bind(after.key);
            }
            query.fetch_all(pool).await?
        });
        rows.into_iter().map(Invoice::try_from).collect()
    }
}
