//! The gRPC face of the ledger: wire messages in, domain rules, store, wire messages out.

use std::collections::BTreeMap;

use api::common::Money;
use api::mercato::ledger::v1::ledger_service_server::LedgerService;
use api::mercato::ledger::v1::{
    Account, CreateAccountRequest, CreateAccountResponse, Entry, GetAccountRequest, GetAccountResponse,
    GetTransactionRequest, GetTransactionResponse, ListAccountEntriesRequest, ListAccountEntriesResponse,
    ListAccountsRequest, ListAccountsResponse, ListTransactionsRequest, ListTransactionsResponse, Posting,
    RecordTransactionRequest, RecordTransactionResponse, Transaction,
};
use platform::auth::caller;
use platform::db::Db;
use platform::error::FieldViolation;
use platform::events::RelayHandle;
use platform::time::{now_micros, timestamp};
use tonic::{Request, Response, Status};

use crate::domain::{self, AccountType, Amount, PostingInput, TransactionInput};
use crate::error::Error;
use crate::store::{AccountQuery, AccountRow, EntryRow, Store, StoredTransaction};

/// Implements `mercato.ledger.v1.LedgerService`.
#[derive(Debug, Clone)]
pub struct LedgerApi {
    store: Store,
    relay: RelayHandle,
}

impl LedgerApi {
    /// The service over a migrated database; `relay` is woken when events were written.
    pub fn new(db: Db, relay: RelayHandle) -> Self {
        Self { store: Store::new(db), relay }
    }
}

fn type_from_wire(value: i32) -> Option<AccountType> {
    use api::mercato::ledger::v1::AccountType as Wire;
    match Wire::try_from(value).ok()? {
        Wire::Unspecified => None,
        Wire::Asset => Some(AccountType::Asset),
        Wire::Liability => Some(AccountType::Liability),
        Wire::Revenue => Some(AccountType::Revenue),
        Wire::Expense => Some(AccountType::Expense),
        Wire::Equity => Some(AccountType::Equity),
    }
}

fn type_to_wire(t: AccountType) -> i32 {
    use api::mercato::ledger::v1::AccountType as Wire;
    let wire = match t {
        AccountType::Asset => Wire::Asset,
        AccountType::Liability => Wire::Liability,
        AccountType::Revenue => Wire::Revenue,
        AccountType::Expense => Wire::Expense,
        AccountType::Equity => Wire::Equity,
    };
    wire as i32
}

fn money(currency: String, amount_minor: i64) -> Option<Money> {
    Some(Money { currency, amount_minor })
}

fn account_to_wire(row: AccountRow) -> Account {
    Account {
        id: row.id,
        code: row.code,
        name: row.name,
        r#type: type_to_wire(row.account_type),
        balance: money(row.currency.clone(), row.balance_minor),
        currency: row.currency,
        create_time: Some(timestamp(row.create_time)),
    }
}

fn entry_to_wire(row: EntryRow) -> Entry {
    Entry {
        transaction_id: row.transaction_id,
        account_id: row.account_id,
        amount: money(row.currency.clone(), row.amount_minor),
        balance: money(row.currency, row.balance_after_minor),
        description: row.description,
        create_time: Some(timestamp(row.create_time)),
    }
}

fn transaction_to_wire(stored: StoredTransaction) -> Transaction {
    let t = stored.transaction;
    Transaction {
        id: t.id,
        description: t.description,
        postings: t
            .postings
            .into_iter()
            .map(|p| Posting { account_id: p.account_id, amount: money(p.currency, p.amount_minor) })
            .collect(),
        metadata: t.metadata.into_iter().collect(),
        reverses_transaction_id: t.reverses.unwrap_or_default(),
        create_time: Some(timestamp(stored.create_time)),
    }
}

fn transaction_from_wire(req: RecordTransactionRequest) -> TransactionInput {
    TransactionInput {
        transaction_id: req.transaction_id,
        description: req.description,
        postings: req
            .postings
            .into_iter()
            .map(|p| PostingInput {
                account_id: p.account_id,
                amount: p.amount.map(|m| Amount { currency: m.currency, amount_minor: m.amount_minor }),
            })
            .collect(),
        metadata: req.metadata.into_iter().collect::<BTreeMap<_, _>>(),
        reverses_transaction_id: req.reverses_transaction_id,
    }
}

fn require(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(FieldViolation::new(field, "is required")));
    }
    Ok(())
}

/// Splits a fetched page (one row more than asked) into the page and whether another follows.
fn page<T>(mut rows: Vec<T>, size: i64) -> (Vec<T>, bool) {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let more = rows.len() > size;
    rows.truncate(size);
    (rows, more)
}

#[tonic::async_trait]
impl LedgerService for LedgerApi {
    async fn create_account(
        &self,
        request: Request<CreateAccountRequest>,
    ) -> Result<Response<CreateAccountResponse>, Status> {
        let req = request.into_inner();
        let account = domain::validate_account(&req.code, &req.name, type_from_wire(req.r#type), &req.currency)
            .map_err(Error::InvalidArgument)?;
        let id = uuid::Uuid::now_v7().to_string();
        let (row, created) = self.store.create_account(&id, &account, now_micros()).await?;
        if created {
            tracing::info!(account_id = %row.id, code = %row.code, "account opened");
        }
        Ok(Response::new(CreateAccountResponse { account: Some(account_to_wire(row)) }))
    }

    async fn get_account(&self, request: Request<GetAccountRequest>) -> Result<Response<GetAccountResponse>, Status> {
        let id = request.into_inner().id;
        require("id", &id)?;
        let row = self.store.get_account(&id).await?.ok_or_else(|| Error::account_not_found(&id))?;
        Ok(Response::new(GetAccountResponse { account: Some(account_to_wire(row)) }))
    }

    async fn list_accounts(
        &self,
        request: Request<ListAccountsRequest>,
    ) -> Result<Response<ListAccountsResponse>, Status> {
        let req = request.into_inner();
        let mut violations = Vec::new();
        let size = domain::page_size(req.page_size).unwrap_or_else(|v| {
            violations.push(v);
            domain::DEFAULT_PAGE_SIZE
        });
        let after_code = domain::decode_account_token(&req.page_token).unwrap_or_else(|v| {
            violations.push(v);
            None
        });
        let account_type = type_from_wire(req.r#type);
        if account_type.is_none() && req.r#type != 0 {
            violations.push(FieldViolation::new("type", "is not a known account type"));
        }
        if let Err(v) = domain::validate_currency_filter(&req.currency) {
            violations.push(v);
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        let rows = self
            .store
            .list_accounts(&AccountQuery { account_type, currency: req.currency, after_code, limit: size + 1 })
            .await?;
        let (rows, more) = page(rows, size);
        let next_page_token = match rows.last() {
            Some(last) if more => domain::account_token(&last.code),
            _ => String::new(),
        };
        Ok(Response::new(ListAccountsResponse {
            accounts: rows.into_iter().map(account_to_wire).collect(),
            next_page_token,
        }))
    }

    async fn list_account_entries(
        &self,
        request: Request<ListAccountEntriesRequest>,
    ) -> Result<Response<ListAccountEntriesResponse>, Status> {
        let req = request.into_inner();
        let mut violations = Vec::new();
        if req.account_id.is_empty() {
            violations.push(FieldViolation::new("account_id", "is required"));
        }
        let size = domain::page_size(req.page_size).unwrap_or_else(|v| {
            violations.push(v);
            domain::DEFAULT_PAGE_SIZE
        });
        let before = domain::decode_entry_token(&req.page_token).unwrap_or_else(|v| {
            violations.push(v);
            None
        });
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        // An unknown account is NOT_FOUND, not an empty statement.
        self.store.get_account(&req.account_id).await?.ok_or_else(|| Error::account_not_found(&req.account_id))?;
        let rows = self.store.list_entries(&req.account_id, before, size + 1).await?;
        let (rows, more) = page(rows, size);
        let next_page_token = match rows.last() {
            Some(last) if more => domain::entry_token(last.account_seq),
            _ => String::new(),
        };
        Ok(Response::new(ListAccountEntriesResponse {
            entries: rows.into_iter().map(entry_to_wire).collect(),
            next_page_token,
        }))
    }

    async fn record_transaction(
        &self,
        request: Request<RecordTransactionRequest>,
    ) -> Result<Response<RecordTransactionResponse>, Status> {
        let actor = caller(&request)?.sub.clone();
        let transaction = domain::validate_transaction(transaction_from_wire(request.into_inner()))
            .map_err(Error::InvalidArgument)?;
        let stored = self.store.record(&transaction, &actor, now_micros()).await?;
        self.relay.wake();
        tracing::info!(
            transaction_id = %stored.transaction.id,
            postings = stored.transaction.postings.len(),
            reverses = stored.transaction.reverses.as_deref().unwrap_or(""),
            "transaction recorded"
        );
        Ok(Response::new(RecordTransactionResponse { transaction: Some(transaction_to_wire(stored)) }))
    }

    async fn list_transactions(
        &self,
        request: Request<ListTransactionsRequest>,
    ) -> Result<Response<ListTransactionsResponse>, Status> {
        let req = request.into_inner();
        let page = platform::paging::page_size(req.page_size);
        let before = platform::paging::KeyCursor::decode(&req.page_token);
        let period = platform::time::period(req.start_time.as_ref(), req.end_time.as_ref());
        let (limit, before, period) = match (page, before, period) {
            (Ok(limit), Ok(before), Ok(period)) => (limit, before, period),
            (limit, before, period) => {
                let violations = limit.err().into_iter().chain(before.err()).chain(period.err().into_iter().flatten());
                return Err(Error::InvalidArgument(violations.collect()).into());
            }
        };
        // One more than the page tells whether another follows.
        let rows = self.store.journal(period, before.as_ref(), limit + 1).await?;
        let (rows, next_page_token) = platform::paging::page(rows, limit, |last| {
            platform::paging::KeyCursor { key: last.create_time, id: last.transaction.id.clone() }.encode()
        });
        Ok(Response::new(ListTransactionsResponse {
            transactions: rows.into_iter().map(transaction_to_wire).collect(),
            next_page_token,
        }))
    }

    async fn get_transaction(
        &self,
        request: Request<GetTransactionRequest>,
    ) -> Result<Response<GetTransactionResponse>, Status> {
        let id = request.into_inner().id;
        domain::validate_transaction_id("id", &id).map_err(Error::invalid)?;
        let stored = self.store.get_transaction(&id).await?.ok_or_else(|| Error::transaction_not_found(&id))?;
        Ok(Response::new(GetTransactionResponse { transaction: Some(transaction_to_wire(stored)) }))
    }
}
