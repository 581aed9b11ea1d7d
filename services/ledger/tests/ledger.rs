//! The ledger over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL: each
//! scenario is an async fn taking a `Db`, run once per engine. Every scenario ends with an audit of the
//! books, which must come back clean.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use api::common::Money;
use api::mercato::ledger::v1::TransactionRecorded;
use api::mercato::ledger::v1::ledger_service_client::LedgerServiceClient;
use api::mercato::ledger::v1::{
    Account, AccountType, CreateAccountRequest, Entry, GetAccountRequest, GetTransactionRequest,
    ListAccountEntriesRequest, ListAccountEntriesResponse, ListAccountsRequest, ListTransactionsRequest,
    ListTransactionsResponse, Posting, RecordTransactionRequest, Transaction,
};
use platform::db::Db;
use platform::events::{EventBus, EventEnvelope, InProcessBus};
use platform::testkit::TestIssuer;
use platform::testkit::error_reason as reason;
use platform::testkit::violated_fields as bad_fields;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

type Client = LedgerServiceClient<Channel>;

/// The ledger running in-process on a port-0 listener.
struct Server {
    client: Client,
    /// `ledger.transaction.recorded` payloads as they were published, in order.
    recorded: Arc<std::sync::Mutex<Vec<TransactionRecorded>>>,
    issuer: Arc<TestIssuer>,
    db: Db,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ledger::Error>>,
}

impl Server {
    async fn start(db: Db) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = Arc::new(TestIssuer::new().expect("issuer"));
        let shutdown = CancellationToken::new();
        let bus = Arc::new(InProcessBus::new());
        let recorded = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = recorded.clone();
        bus.subscribe(
            "test",
            &[ledger::events::TRANSACTION_RECORDED],
            Arc::new(move |envelope: Arc<EventEnvelope>| {
                let sink = sink.clone();
                Box::pin(async move {
                    let event = TransactionRecorded::decode(envelope.data.as_slice()).map_err(|e| e.to_string())?;
                    sink.lock().expect("lock").push(event);
                    Ok(())
                })
            }),
        );
        let task = tokio::spawn(ledger::serve(listener, db.clone(), issuer.verifier(), bus, shutdown.clone()));
        let url = format!("http://{addr}");
        let client = LedgerServiceClient::new(platform::testkit::connect_when_up(&url, "ledger").await);
        Self { client, recorded, issuer, db, shutdown, task }
    }

    /// An administrator's token: ledger:read and ledger:write among others.
    fn admin(&self) -> String {
        self.issuer.token("admin-1", &["catalog:write", "ledger:read", "ledger:write"], &["admin"])
    }

    /// A shopper's token: no ledger scopes.
    fn customer(&self) -> String {
        self.issuer.token("customer-1", &["cart:write", "orders:read", "orders:write", "payment:write"], &["customer"])
    }

    /// Stops the server after checking that the books balance.
    async fn stop(self) {
        let violations = ledger::audit(&self.db).await.expect("audit");
        assert!(violations.is_empty(), "the books do not balance: {violations:#?}");
        self.shutdown.cancel();
        self.task.await.expect("join").expect("served cleanly");
    }

    async fn try_open(&self, code: &str, account_type: AccountType, currency: &str) -> Result<Account, Status> {
        let request = CreateAccountRequest {
            code: code.into(),
            name: format!("Account {code}"),
            r#type: account_type as i32,
            currency: currency.into(),
        };
        let response = self.client.clone().create_account(with_token(request, &self.admin())).await?;
        Ok(response.into_inner().account.expect("account"))
    }

    async fn open(&self, code: &str, account_type: AccountType, currency: &str) -> Account {
        self.try_open(code, account_type, currency).await.expect("create account")
    }

    async fn account(&self, id: &str) -> Account {
        let request = with_token(GetAccountRequest { id: id.into() }, &self.admin());
        self.client.clone().get_account(request).await.expect("get account").into_inner().account.expect("account")
    }

    async fn balance(&self, id: &str) -> i64 {
        self.account(id).await.balance.expect("balance").amount_minor
    }

    async fn record(&self, request: RecordTransactionRequest) -> Result<Transaction, Status> {
        let response = self.client.clone().record_transaction(with_token(request, &self.admin())).await?;
        Ok(response.into_inner().transaction.expect("transaction"))
    }

    async fn transaction(&self, id: &str) -> Result<Transaction, Status> {
        let request = with_token(GetTransactionRequest { id: id.into() }, &self.admin());
        Ok(self.client.clone().get_transaction(request).await?.into_inner().transaction.expect("transaction"))
    }

    async fn entries(
        &self,
        account_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<ListAccountEntriesResponse, Status> {
        let request =
            ListAccountEntriesRequest { account_id: account_id.into(), page_size, page_token: page_token.into() };
        Ok(self.client.clone().list_account_entries(with_token(request, &self.admin())).await?.into_inner())
    }
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    request
}

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money { currency: "EUR".into(), amount_minor })
}

fn posting(account: &Account, amount_minor: i64) -> Posting {
    Posting { account_id: account.id.clone(), amount: Some(Money { currency: account.currency.clone(), amount_minor }) }
}

fn tx(id: &str, postings: Vec<Posting>) -> RecordTransactionRequest {
    RecordTransactionRequest {
        transaction_id: id.into(),
        description: format!("transaction {id}"),
        postings,
        metadata: HashMap::new(),
        reverses_transaction_id: String::new(),
    }
}

/// (amount, running balance) of each entry.
fn lines(entries: &[Entry]) -> Vec<(i64, i64)> {
    entries
        .iter()
        .map(|e| (e.amount.as_ref().expect("amount").amount_minor, e.balance.as_ref().expect("balance").amount_minor))
        .collect()
}

async fn accounts_and_access(db: Db) {
    let server = Server::start(db).await;
    let cash = server.open("assets:cash:eur", AccountType::Asset, "EUR").await;
    assert!(uuid::Uuid::parse_str(&cash.id).is_ok(), "a UUID: {}", cash.id);
    assert_eq!(
        (cash.code.as_str(), cash.r#type, cash.currency.as_str()),
        ("assets:cash:eur", AccountType::Asset as i32, "EUR")
    );
    assert_eq!(cash.balance, eur(0));
    assert!(cash.create_time.expect("time").seconds > 1_600_000_000);
    assert_eq!(server.account(&cash.id).await, cash);

    // Idempotent by code: the same type and currency return the account; anything else conflicts.
    assert_eq!(server.open("assets:cash:eur", AccountType::Asset, "EUR").await, cash);
    let err = server.try_open("assets:cash:eur", AccountType::Liability, "EUR").await.expect_err("other type");
    assert_eq!((err.code(), reason(&err).as_str()), (Code::AlreadyExists, "ACCOUNT_CODE_TAKEN"));
    let err = server.try_open("assets:cash:eur", AccountType::Asset, "USD").await.expect_err("other currency");
    assert_eq!(err.code(), Code::AlreadyExists);

    let mut client = server.client.clone();
    let invalid =
        CreateAccountRequest { code: "Assets Cash".into(), name: " ".into(), r#type: 0, currency: "eur".into() };
    let err = client.create_account(with_token(invalid, &server.admin())).await.expect_err("invalid");
    assert_eq!(bad_fields(&err), ["code", "name", "type", "currency"]);
    let unknown_type = CreateAccountRequest { code: "x".into(), name: "X".into(), r#type: 99, currency: "EUR".into() };
    let err = client.create_account(with_token(unknown_type, &server.admin())).await.expect_err("type 99");
    assert_eq!(bad_fields(&err), ["type"]);

    let missing = uuid::Uuid::now_v7().to_string();
    let err = client
        .get_account(with_token(GetAccountRequest { id: missing.clone() }, &server.admin()))
        .await
        .expect_err("unknown");
    assert_eq!((err.code(), err.message()), (Code::NotFound, format!("account {missing} not found").as_str()));
    assert_eq!(server.entries(&missing, 0, "").await.expect_err("unknown account").code(), Code::NotFound);
    let err = client.get_transaction(with_token(GetTransactionRequest { id: "nope".into() }, &server.admin())).await;
    assert_eq!(err.expect_err("unknown transaction").code(), Code::NotFound);

    // Listing: by code, filtered, a page at a time.
    server.open("liabilities:customers:eur", AccountType::Liability, "EUR").await;
    server.open("revenue:sales:eur", AccountType::Revenue, "EUR").await;
    server.open("revenue:sales:usd", AccountType::Revenue, "USD").await;
    server.open("expenses:fees:eur", AccountType::Expense, "EUR").await;
    server.open("equity:capital:eur", AccountType::Equity, "EUR").await;
    let list = |request: ListAccountsRequest| {
        let mut client = server.client.clone();
        let request = with_token(request, &server.admin());
        async move { client.list_accounts(request).await.map(|r| r.into_inner()) }
    };
    let all = list(ListAccountsRequest::default()).await.expect("list");
    let codes: Vec<&str> = all.accounts.iter().map(|a| a.code.as_str()).collect();
    assert_eq!(
        codes,
        [
            "assets:cash:eur",
            "equity:capital:eur",
            "expenses:fees:eur",
            "liabilities:customers:eur",
            "revenue:sales:eur",
            "revenue:sales:usd"
        ]
    );
    assert_eq!(all.next_page_token, "");
    let revenue =
        list(ListAccountsRequest { r#type: AccountType::Revenue as i32, ..Default::default() }).await.expect("by type");
    assert_eq!(revenue.accounts.len(), 2);
    let usd = list(ListAccountsRequest { currency: "USD".into(), ..Default::default() }).await.expect("by currency");
    assert_eq!(usd.accounts.iter().map(|a| a.code.as_str()).collect::<Vec<_>>(), ["revenue:sales:usd"]);
    let both =
        ListAccountsRequest { r#type: AccountType::Revenue as i32, currency: "EUR".into(), ..Default::default() };
    assert_eq!(list(both).await.expect("both").accounts.len(), 1);
    let first = list(ListAccountsRequest { page_size: 4, ..Default::default() }).await.expect("page 1");
    assert_eq!(first.accounts.len(), 4);
    let rest = list(ListAccountsRequest { page_size: 4, page_token: first.next_page_token, ..Default::default() })
        .await
        .expect("page 2");
    assert_eq!((rest.accounts.len(), rest.next_page_token.as_str()), (2, ""));
    assert_eq!(rest.accounts[0].code, "revenue:sales:eur");
    let err = list(ListAccountsRequest {
        page_size: -1,
        page_token: "garbage!".into(),
        currency: "euro".into(),
        ..Default::default()
    })
    .await
    .expect_err("bad list");
    assert_eq!(bad_fields(&err), ["page_size", "page_token", "currency"]);

    // Access: customers hold no ledger scope, anonymous callers are not let in at all.
    let customer = server.customer();
    let open = || CreateAccountRequest { code: "x".into(), name: "X".into(), r#type: 1, currency: "EUR".into() };
    let err = client.create_account(with_token(open(), &customer)).await.expect_err("customer create");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = client.get_account(with_token(GetAccountRequest { id: cash.id.clone() }, &customer)).await;
    assert_eq!(err.expect_err("customer get").code(), Code::PermissionDenied);
    let err = client.list_accounts(with_token(ListAccountsRequest::default(), &customer)).await;
    assert_eq!(err.expect_err("customer list").code(), Code::PermissionDenied);
    let err = client.record_transaction(with_token(tx("t", vec![]), &customer)).await;
    assert_eq!(err.expect_err("customer record").code(), Code::PermissionDenied);
    let entries = ListAccountEntriesRequest { account_id: cash.id.clone(), ..Default::default() };
    let err = client.list_account_entries(with_token(entries.clone(), &customer)).await;
    assert_eq!(err.expect_err("customer entries").code(), Code::PermissionDenied);
    let err = client.get_transaction(with_token(GetTransactionRequest { id: "t".into() }, &customer)).await;
    assert_eq!(err.expect_err("customer transaction").code(), Code::PermissionDenied);
    let reader = server.issuer.token("auditor", &["ledger:read"], &["staff"]);
    assert_eq!(
        client
            .list_accounts(with_token(ListAccountsRequest::default(), &reader))
            .await
            .expect("reader")
            .into_inner()
            .accounts
            .len(),
        6
    );
    let err = client.record_transaction(with_token(tx("t", vec![]), &reader)).await;
    assert_eq!(err.expect_err("read-only record").code(), Code::PermissionDenied);
    assert_eq!(client.create_account(Request::new(open())).await.expect_err("anonymous").code(), Code::Unauthenticated);
    let err = client.get_account(Request::new(GetAccountRequest { id: cash.id.clone() })).await;
    assert_eq!(err.expect_err("anonymous get").code(), Code::Unauthenticated);
    let err = client.record_transaction(Request::new(tx("t", vec![]))).await;
    assert_eq!(err.expect_err("anonymous record").code(), Code::Unauthenticated);
    let err = client.list_account_entries(Request::new(entries)).await;
    assert_eq!(err.expect_err("anonymous entries").code(), Code::Unauthenticated);
    server.stop().await;
}

async fn balances_and_entries(db: Db) {
    let server = Server::start(db).await;
    let cash = server.open("assets:cash:eur", AccountType::Asset, "EUR").await;
    let sales = server.open("revenue:sales:eur", AccountType::Revenue, "EUR").await;
    let fees = server.open("expenses:fees:eur", AccountType::Expense, "EUR").await;

    // A sale of 19.99 EUR: debit cash, credit sales.
    let mut sale = tx("payment:pay-1:capture", vec![posting(&cash, 1999), posting(&sales, -1999)]);
    sale.metadata.insert("payment_id".into(), "pay-1".into());
    sale.metadata.insert("order_id".into(), "order-1".into());
    let recorded = server.record(sale.clone()).await.expect("record");
    assert_eq!(recorded.id, "payment:pay-1:capture");
    assert_eq!(recorded.description, sale.description);
    assert_eq!(recorded.postings, sale.postings);
    assert_eq!(recorded.metadata, sale.metadata);
    assert_eq!(recorded.reverses_transaction_id, "");
    assert!(recorded.create_time.expect("time").seconds > 1_600_000_000);
    assert_eq!(server.transaction(&recorded.id).await.expect("get"), recorded, "stored as answered");

    // The processor's fee of 0.59 EUR, and a second sale; a posting to the same account twice is fine.
    server.record(tx("fee-1", vec![posting(&fees, 59), posting(&cash, -59)])).await.expect("fee");
    server
        .record(tx("sale-2", vec![posting(&cash, 500), posting(&cash, 250), posting(&sales, -750)]))
        .await
        .expect("sale 2");
    // Raw signed sums: debits positive, credits negative.
    assert_eq!(server.balance(&cash.id).await, 1999 - 59 + 750);
    assert_eq!(server.balance(&sales.id).await, -1999 - 750);
    assert_eq!(server.balance(&fees.id).await, 59);

    let statement = server.entries(&cash.id, 0, "").await.expect("entries");
    assert_eq!(
        lines(&statement.entries),
        [(250, 2690), (500, 2440), (-59, 1940), (1999, 1999)],
        "newest first, running"
    );
    assert_eq!(statement.next_page_token, "");
    let newest = &statement.entries[0];
    assert_eq!((newest.transaction_id.as_str(), newest.account_id.as_str()), ("sale-2", cash.id.as_str()));
    assert_eq!(newest.description, "transaction sale-2");
    assert_eq!(newest.amount.as_ref().map(|m| m.currency.as_str()), Some("EUR"));
    assert_eq!(lines(&server.entries(&sales.id, 0, "").await.expect("sales").entries), [(-750, -2749), (-1999, -1999)]);
    let empty = server.open("equity:capital:eur", AccountType::Equity, "EUR").await;
    assert!(server.entries(&empty.id, 0, "").await.expect("no entries").entries.is_empty());
    server.stop().await;
}

async fn invalid_transactions_change_nothing(db: Db) {
    let server = Server::start(db).await;
    let cash = server.open("assets:cash:eur", AccountType::Asset, "EUR").await;
    let sales = server.open("revenue:sales:eur", AccountType::Revenue, "EUR").await;
    let usd = server.open("assets:cash:usd", AccountType::Asset, "USD").await;

    let err = server.record(tx("t1", vec![posting(&cash, 1000), posting(&sales, -999)])).await.expect_err("unbalanced");
    assert_eq!(bad_fields(&err), ["postings"]);
    assert!(err.message().contains("EUR sums to 1"), "{}", err.message());
    let err = server.record(tx("t1", vec![posting(&cash, 1000)])).await.expect_err("single posting");
    assert_eq!(bad_fields(&err), ["postings"]);
    let err = server.record(tx("t1", vec![])).await.expect_err("no postings");
    assert_eq!(bad_fields(&err), ["postings"]);
    let mismatch = vec![posting(&cash, 1000), Posting { account_id: usd.id.clone(), amount: eur(-1000) }];
    let err = server.record(tx("t1", mismatch)).await.expect_err("currency mismatch");
    assert_eq!(bad_fields(&err), ["postings[1].amount.currency"]);
    assert!(err.message().contains("must be USD"), "{}", err.message());
    let ghost = Posting { account_id: "no-such-account".into(), amount: eur(-1000) };
    let err = server.record(tx("t1", vec![posting(&cash, 1000), ghost])).await.expect_err("unknown account");
    assert_eq!(bad_fields(&err), ["postings[1].account_id"]);
    let err = server
        .record(tx("t1", vec![posting(&cash, 1000), posting(&sales, 0), posting(&sales, -1000)]))
        .await
        .expect_err("zero amount");
    assert_eq!(bad_fields(&err), ["postings[1].amount.amount_minor"]);
    let no_amount = Posting { account_id: sales.id.clone(), amount: None };
    let err = server.record(tx("t1", vec![posting(&cash, 1), no_amount])).await.expect_err("no amount");
    assert_eq!(bad_fields(&err), ["postings[1].amount"]);
    let err = server.record(tx("", vec![posting(&cash, 1), posting(&sales, -1)])).await.expect_err("no id");
    assert_eq!(bad_fields(&err), ["transaction_id"]);
    let cross = vec![posting(&cash, 100), posting(&usd, -100)];
    assert_eq!(bad_fields(&server.record(tx("t1", cross)).await.expect_err("cross-currency")), ["postings"]);

    // A balance never overflows: the posting that would take it past i64::MAX is refused, all of it.
    let equity = server.open("equity:capital:eur", AccountType::Equity, "EUR").await;
    server.record(tx("big", vec![posting(&cash, i64::MAX), posting(&equity, -i64::MAX)])).await.expect("big");
    let err = server.record(tx("t1", vec![posting(&cash, 1), posting(&equity, -1)])).await.expect_err("overflow");
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "BALANCE_OVERFLOW"));
    assert_eq!(server.balance(&cash.id).await, i64::MAX);
    assert_eq!(server.balance(&equity.id).await, -i64::MAX);
    server.record(tx("t1", vec![posting(&cash, -1), posting(&equity, 1)])).await.expect("the id is still free");
    // The same when the refused posting is the last to move (balances move in account-id order, and `float`, the
    // newest account, comes last): the move before it is undone.
    let capital = server.open("equity:float:eur", AccountType::Equity, "EUR").await;
    let float = server.open("assets:float:eur", AccountType::Asset, "EUR").await;
    server.record(tx("float", vec![posting(&float, i64::MAX), posting(&capital, -i64::MAX)])).await.expect("float");
    let err = server.record(tx("t2", vec![posting(&float, 1), posting(&capital, -1)])).await.expect_err("overflow");
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "BALANCE_OVERFLOW"));
    assert!(err.message().contains("postings[0]"), "names the posting: {}", err.message());
    assert_eq!(server.balance(&capital.id).await, -i64::MAX);
    assert_eq!(server.balance(&float.id).await, i64::MAX);

    // Nothing of the refused transactions was written.
    assert_eq!(server.balance(&sales.id).await, 0);
    assert_eq!(server.balance(&usd.id).await, 0);
    assert_eq!(server.entries(&cash.id, 0, "").await.expect("entries").entries.len(), 2);
    assert_eq!(server.transaction("big").await.expect("big").postings.len(), 2);
    server.stop().await;
}

async fn idempotency_and_reversals(db: Db) {
    let server = Server::start(db).await;
    let cash = server.open("assets:cash:eur", AccountType::Asset, "EUR").await;
    let sales = server.open("revenue:sales:eur", AccountType::Revenue, "EUR").await;
    let fees = server.open("expenses:fees:eur", AccountType::Expense, "EUR").await;

    let mut capture = tx("capture-1", vec![posting(&cash, 941), posting(&fees, 59), posting(&sales, -1000)]);
    capture.metadata.insert("payment_id".into(), "pay-1".into());
    let first = server.record(capture.clone()).await.expect("record");
    let again = server.record(capture.clone()).await.expect("resend");
    assert_eq!(again, first, "a resend answers the stored transaction");
    assert_eq!(server.balance(&cash.id).await, 941, "and posts nothing more");
    assert_eq!(server.entries(&cash.id, 0, "").await.expect("entries").entries.len(), 1);

    // The same id with anything different is refused.
    let mut other_amounts = tx("capture-1", vec![posting(&cash, 1000), posting(&sales, -1000)]);
    other_amounts.metadata = capture.metadata.clone();
    let mut other_metadata = capture.clone();
    other_metadata.metadata.insert("payment_id".into(), "pay-2".into());
    let other_description = RecordTransactionRequest { description: "other".into(), ..capture.clone() };
    let mut reordered = capture.clone();
    reordered.postings.swap(0, 1);
    for changed in [other_amounts, other_metadata, other_description, reordered] {
        let err = server.record(changed).await.expect_err("reused id");
        assert_eq!((err.code(), reason(&err).as_str()), (Code::AlreadyExists, "TRANSACTION_ID_REUSED"));
    }
    assert_eq!(server.balance(&cash.id).await, 941);

    // The journal entry was published once, with its postings; the resends and refusals published nothing.
    let mut published = Vec::new();
    for _ in 0..100 {
        published = server.recorded.lock().expect("lock").clone();
        if !published.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let published_now = server.recorded.lock().expect("lock").clone();
    assert_eq!(published_now, published, "nothing more arrives");
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0].transaction_id, "capture-1");
    assert_eq!(published[0].actor, "admin-1");
    assert_eq!(published[0].postings, capture.postings);

    // A reversal must negate the original exactly.
    let reversal = |id: &str, postings: Vec<Posting>| RecordTransactionRequest {
        reverses_transaction_id: "capture-1".into(),
        ..tx(id, postings)
    };
    let err = server
        .record(reversal("undo-1", vec![posting(&cash, -900), posting(&fees, -100), posting(&sales, 1000)]))
        .await
        .expect_err("not the negation");
    assert_eq!(bad_fields(&err), ["postings"]);
    let err = server
        .record(RecordTransactionRequest {
            reverses_transaction_id: "no-such-transaction".into(),
            ..tx("undo-x", vec![posting(&cash, -1), posting(&sales, 1)])
        })
        .await
        .expect_err("unknown original");
    assert_eq!(bad_fields(&err), ["reverses_transaction_id"]);
    assert_eq!(server.transaction("undo-x").await.expect_err("not stored").code(), Code::NotFound);

    let undo = reversal("undo-1", vec![posting(&sales, 1000), posting(&cash, -941), posting(&fees, -59)]);
    let reversed = server.record(undo.clone()).await.expect("reverse");
    assert_eq!(reversed.reverses_transaction_id, "capture-1");
    assert_eq!(server.transaction("undo-1").await.expect("get"), reversed);
    for account in [&cash, &sales, &fees] {
        assert_eq!(server.balance(&account.id).await, 0, "{} is back to zero", account.code);
    }
    assert_eq!(server.record(undo).await.expect("resent reversal"), reversed);
    let err = server
        .record(reversal("undo-2", vec![posting(&sales, 1000), posting(&cash, -941), posting(&fees, -59)]))
        .await
        .expect_err("second reversal");
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "TRANSACTION_ALREADY_REVERSED"));
    assert!(err.message().contains("undo-1"), "{}", err.message());
    assert_eq!(server.balance(&cash.id).await, 0);
    assert_eq!(server.transaction("capture-1").await.expect("the original stays"), first);

    // Concurrent reversals of one transaction: exactly one wins.
    server.record(tx("capture-2", vec![posting(&cash, 300), posting(&sales, -300)])).await.expect("capture 2");
    let attempts = (0..10).map(|i| {
        server.record(RecordTransactionRequest {
            reverses_transaction_id: "capture-2".into(),
            ..tx(&format!("undo-2-{i}"), vec![posting(&cash, -300), posting(&sales, 300)])
        })
    });
    let results = futures::future::join_all(attempts).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(reason(err), "TRANSACTION_ALREADY_REVERSED");
    }
    assert_eq!(server.balance(&cash.id).await, 0);
    server.stop().await;
}

async fn concurrent_resends_record_once(db: Db) {
    let server = Server::start(db).await;
    let cash = server.open("assets:cash:eur", AccountType::Asset, "EUR").await;
    let customers = server.open("liabilities:customers:eur", AccountType::Liability, "EUR").await;
    let mut request = tx("payment:pay-42:capture", vec![posting(&cash, 4200), posting(&customers, -4200)]);
    request.metadata.insert("payment_id".into(), "pay-42".into());
    let calls = (0..50).map(|_| server.record(request.clone()));
    let results: Vec<Transaction> =
        futures::future::join_all(calls).await.into_iter().map(|r| r.expect("every resend succeeds")).collect();
    assert!(results.windows(2).all(|w| w[0] == w[1]), "all 50 get the same answer");
    assert_eq!(server.transaction(&request.transaction_id).await.expect("stored"), results[0]);
    assert_eq!(server.balance(&cash.id).await, 4200, "posted once");
    assert_eq!(server.balance(&customers.id).await, -4200);
    assert_eq!(server.entries(&cash.id, 0, "").await.expect("entries").entries.len(), 1);
    server.stop().await;
}

async fn concurrent_transactions_keep_balances(db: Db) {
    let server = Server::start(db).await;
    let cash = server.open("assets:cash:eur", AccountType::Asset, "EUR").await;
    let sales = server.open("revenue:sales:eur", AccountType::Revenue, "EUR").await;
    // Both directions, so that transactions touch the two accounts in opposite roles at once.
    let calls = (0..100).map(|i| {
        let amount = if i % 3 == 0 { -(i + 1) } else { i + 1 };
        server.record(tx(&format!("t-{i:03}"), vec![posting(&sales, -amount), posting(&cash, amount)]))
    });
    for result in futures::future::join_all(calls).await {
        result.expect("every transaction is recorded");
    }
    let expected: i64 = (0..100).map(|i| if i % 3 == 0 { -(i + 1) } else { i + 1 }).sum();
    assert_eq!(server.balance(&cash.id).await, expected);
    assert_eq!(server.balance(&sales.id).await, -expected);

    // The statement is a consistent history: 100 entries whose running balances add up.
    let mut entries = Vec::new();
    let mut token = String::new();
    loop {
        let page = server.entries(&cash.id, 100, &token).await.expect("entries");
        entries.extend(page.entries);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(entries.len(), 100);
    let ids: HashSet<&str> = entries.iter().map(|e| e.transaction_id.as_str()).collect();
    assert_eq!(ids.len(), 100);
    let mut running = 0;
    for (amount, balance) in lines(&entries).into_iter().rev() {
        running += amount;
        assert_eq!(balance, running, "running balance after each posting");
    }
    server.stop().await;
}

async fn entries_pagination(db: Db) {
    let server = Server::start(db).await;
    let cash = server.open("assets:cash:eur", AccountType::Asset, "EUR").await;
    let sales = server.open("revenue:sales:eur", AccountType::Revenue, "EUR").await;
    for i in 1..=25 {
        server
            .record(tx(&format!("sale-{i:02}"), vec![posting(&cash, i * 100), posting(&sales, -i * 100)]))
            .await
            .expect("sale");
    }
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut token = String::new();
    loop {
        let page = server.entries(&cash.id, 10, &token).await.expect("page");
        sizes.push(page.entries.len());
        seen.extend(page.entries);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(sizes.len() < 5, "pagination does not end");
    }
    assert_eq!(sizes, [10, 10, 5]);
    let ids: Vec<String> = seen.iter().map(|e| e.transaction_id.clone()).collect();
    let newest_first: Vec<String> = (1..=25).rev().map(|i| format!("sale-{i:02}")).collect();
    assert_eq!(ids, newest_first, "newest first, no gaps, no duplicates");
    let running: Vec<i64> = (1..=25).rev().map(|i| 100 * i * (i + 1) / 2).collect();
    assert_eq!(lines(&seen).into_iter().map(|(_, b)| b).collect::<Vec<_>>(), running);

    assert_eq!(server.entries(&cash.id, 0, "").await.expect("default").entries.len(), 20, "default page size");
    let big = server.entries(&cash.id, 1000, "").await.expect("clamped");
    assert_eq!((big.entries.len(), big.next_page_token.as_str()), (25, ""));
    let err = server.entries(&cash.id, -1, "not-a-token!").await.expect_err("bad page");
    assert_eq!(bad_fields(&err), ["page_size", "page_token"]);
    assert_eq!(bad_fields(&server.entries("", 0, "").await.expect_err("no account")), ["account_id"]);
    server.stop().await;
}

async fn audit_finds_a_corrupted_balance(db: Db) {
    let server = Server::start(db.clone()).await;
    let cash = server.open("assets:cash:eur", AccountType::Asset, "EUR").await;
    let sales = server.open("revenue:sales:eur", AccountType::Revenue, "EUR").await;
    server.open("equity:unused:eur", AccountType::Equity, "EUR").await;
    for i in 0..5 {
        server.record(tx(&format!("sale-{i}"), vec![posting(&cash, 700), posting(&sales, -700)])).await.expect("sale");
    }
    assert_eq!(ledger::audit(&db).await.expect("audit"), Vec::<String>::new());

    platform::with_db!(&db, pool => {
        sqlx::query("UPDATE accounts SET balance_minor = balance_minor + 1 WHERE id = $1")
            .bind(&cash.id)
            .execute(pool)
            .await
            .expect("corrupt the balance");
    });
    let violations = ledger::audit(&db).await.expect("audit");
    assert_eq!(violations.len(), 1, "{violations:#?}");
    assert!(violations[0].contains("assets:cash:eur") && violations[0].contains("3501"), "{violations:#?}");

    // Put it back, then break a transaction's zero sum behind the ledger's back.
    platform::with_db!(&db, pool => {
        sqlx::query("UPDATE accounts SET balance_minor = balance_minor - 1 WHERE id = $1")
            .bind(&cash.id)
            .execute(pool)
            .await
            .expect("repair");
        sqlx::query("UPDATE postings SET amount_minor = 701, balance_after_minor = 3501 WHERE transaction_id = 'sale-4' AND account_id = $1")
            .bind(&cash.id)
            .execute(pool)
            .await
            .expect("corrupt a posting");
        sqlx::query("UPDATE accounts SET balance_minor = 3501 WHERE id = $1")
            .bind(&cash.id)
            .execute(pool)
            .await
            .expect("and the balance with it");
    });
    let violations = ledger::audit(&db).await.expect("audit");
    assert_eq!(violations.len(), 1, "{violations:#?}");
    assert!(violations[0].contains("transaction sale-4") && violations[0].contains("EUR sum to 1"), "{violations:#?}");
    platform::with_db!(&db, pool => {
        sqlx::query("UPDATE postings SET amount_minor = 700, balance_after_minor = 3500 WHERE transaction_id = 'sale-4' AND account_id = $1")
            .bind(&cash.id)
            .execute(pool)
            .await
            .expect("repair the posting");
        sqlx::query("UPDATE accounts SET balance_minor = 3500 WHERE id = $1").bind(&cash.id).execute(pool).await.expect("repair");
    });
    assert_eq!(ledger::audit(&db).await.expect("audit"), Vec::<String>::new());

    // The count that numbers an account's postings, off by one: the next posting would take a number twice or
    // leave a gap.
    platform::with_db!(&db, pool => {
        sqlx::query("UPDATE accounts SET entry_count = entry_count + 1 WHERE id = $1")
            .bind(&sales.id)
            .execute(pool)
            .await
            .expect("corrupt the count");
    });
    let violations = ledger::audit(&db).await.expect("audit");
    assert_eq!(violations.len(), 1, "{violations:#?}");
    assert!(
        violations[0].contains("revenue:sales:eur") && violations[0].contains("entry count is 6"),
        "{violations:#?}"
    );
    platform::with_db!(&db, pool => {
        sqlx::query("UPDATE accounts SET entry_count = 5 WHERE id = $1").bind(&sales.id).execute(pool).await.expect("repair");
    });
    server.stop().await;
}

/// Runs each scenario once on SQLite and once on PostgreSQL.
/// The journal lists every transaction newest first (two of the same microsecond by id, descending), each as
/// GetTransaction shows it (postings, metadata, the transaction it reverses), page by page; only for readers of
/// the books.
async fn the_journal_lists_transactions_newest_first(db: Db) {
    let server = Server::start(db).await;
    let cash = server.open("assets:cash:eur", AccountType::Asset, "EUR").await;
    let sales = server.open("revenue:sales:eur", AccountType::Revenue, "EUR").await;
    for i in 1..=6 {
        let mut sale = tx(&format!("sale-{i}"), vec![posting(&cash, i * 100), posting(&sales, -i * 100)]);
        sale.metadata.insert("order_id".into(), format!("order-{i}"));
        server.record(sale).await.expect("sale");
    }
    let mut correction = tx("sale-3:reversal", vec![posting(&sales, 300), posting(&cash, -300)]);
    correction.reverses_transaction_id = "sale-3".into();
    server.record(correction).await.expect("reversal");
    // sale-2 stamped in the same microsecond as sale-4: the greater id comes first.
    platform::with_db!(&server.db, pool => {
        sqlx::query("UPDATE transactions SET create_time = (SELECT create_time FROM transactions WHERE id = 'sale-4') \
                     WHERE id = 'sale-2'")
            .execute(pool)
            .await
            .expect("a tie");
    });

    let list_in = |period: (Option<i64>, Option<i64>), page_size: i32, page_token: String, token: String| {
        let mut client = server.client.clone();
        let time = |micros: Option<i64>| micros.map(platform::time::timestamp);
        let request =
            ListTransactionsRequest { page_size, page_token, start_time: time(period.0), end_time: time(period.1) };
        async move { client.list_transactions(with_token(request, &token)).await.map(|r| r.into_inner()) }
    };
    let list = |page_size: i32, page_token: String, token: String| list_in((None, None), page_size, page_token, token);
    let ids = |page: &ListTransactionsResponse| page.transactions.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
    let journal = list(0, String::new(), server.admin()).await.expect("lists");
    let newest_first = ["sale-3:reversal", "sale-6", "sale-5", "sale-4", "sale-2", "sale-3", "sale-1"];
    assert_eq!(ids(&journal), newest_first);
    assert!(journal.next_page_token.is_empty());
    for listed in &journal.transactions {
        assert_eq!(*listed, server.transaction(&listed.id).await.expect("gets"), "as GetTransaction shows it");
    }
    assert_eq!(journal.transactions[0].reverses_transaction_id, "sale-3");
    assert_eq!(journal.transactions[1].metadata.get("order_id").map(String::as_str), Some("order-6"));

    // One at a time (the tie split across pages), and three at a time: none repeated or skipped.
    for page_size in [1, 3] {
        let (mut walked, mut token) = (Vec::new(), String::new());
        for _ in 0..10 {
            let page = list(page_size, token, server.admin()).await.expect("a page");
            assert!(page.transactions.len() <= page_size as usize);
            walked.extend(ids(&page));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(walked, newest_first, "pages of {page_size}");
    }

    // A period: from sale-4's time (sale-2's too, the tie) up to, not including, sale-6's; a page at a time.
    let micros = |t: &Transaction| t.create_time.as_ref().and_then(platform::time::micros).expect("a time");
    let time_of = |id: &str| micros(journal.transactions.iter().find(|t| t.id == id).expect("listed"));
    let period = (Some(time_of("sale-4")), Some(time_of("sale-6")));
    let (mut walked, mut token) = (Vec::new(), String::new());
    for _ in 0..10 {
        let page = list_in(period, 1, token, server.admin()).await.expect("a page of the period");
        walked.extend(ids(&page));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(walked, ["sale-5", "sale-4", "sale-2"], "start inclusive, end exclusive");
    let empty = list_in((period.1, period.0), 0, String::new(), server.admin()).await.expect_err("backwards");
    assert_eq!(bad_fields(&empty), ["end_time"]);

    let denied = list(0, String::new(), server.customer()).await.expect_err("not a reader of the books");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let bad = list(-1, "not-a-token!".into(), server.admin()).await.expect_err("bad");
    assert_eq!(bad_fields(&bad), ["page_size", "page_token"]);
    server.stop().await;
}

macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let (db, _dir) = platform::testkit::sqlite("ledger").await.expect("sqlite");
                    super::$scenario(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let Some(db) = platform::testkit::postgres("ledger").await else { return };
                    super::$scenario(db).await;
                }
            )*
        }
    };
}

on_both_engines!(
    accounts_and_access,
    balances_and_entries,
    invalid_transactions_change_nothing,
    idempotency_and_reversals,
    concurrent_resends_record_once,
    concurrent_transactions_keep_balances,
    entries_pagination,
    audit_finds_a_corrupted_balance,
    the_journal_lists_transactions_newest_first,
);

#[tokio::test]
async fn migrate_and_audit_a_fresh_database() {
    let dir = platform::testkit::TempDir::new("ledger-migrate").expect("temp dir");
    let vars = [("MERCATO_DATA_DIR".to_owned(), dir.path().display().to_string())];
    let settings = platform::Settings::from_vars(vars).expect("settings");
    ledger::migrate(&settings).await.expect("migrate");
    ledger::migrate(&settings).await.expect("migrate again");
    assert!(dir.path().join("ledger.db").exists());
    let db = Db::open(&settings, ledger::NAME).await.expect("open");
    assert!(ledger::audit(&db).await.expect("audit").is_empty());
    db.close().await;
}
