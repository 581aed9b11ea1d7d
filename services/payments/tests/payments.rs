//! Payments over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL: each
//! scenario is an async fn taking a `Db`, run once per engine. The ledger is an in-memory stand-in served
//! with tonic on a port-0 listener (a service never depends on another service's crate); it can be switched
//! to fail with UNAVAILABLE. Every scenario that ends normally checks `payments::audit` comes back clean.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::common::Money;
use api::mercato::ledger::v1::ledger_service_server::{LedgerService, LedgerServiceServer};
use api::mercato::ledger::v1::{
    Account, CreateAccountRequest, CreateAccountResponse, GetAccountRequest, GetAccountResponse, GetTransactionRequest,
    GetTransactionResponse, ListAccountEntriesRequest, ListAccountEntriesResponse, ListAccountsRequest,
    ListAccountsResponse, RecordTransactionRequest, RecordTransactionResponse, Transaction,
};
use api::mercato::payments::v1::payment_service_client::PaymentServiceClient;
use api::mercato::payments::v1::{
    CreatePaymentRequest, GetPaymentRequest, ListPaymentsRequest, ListPaymentsResponse, Payment, PaymentStatus,
    RefundPaymentRequest, RefundPaymentResponse,
};
use payments::processor::{ChargeOutcome, PaymentProcessor, ProcessorError, SimulatedProcessor};
use payments::{LedgerClient, StaticToken};
use platform::db::Db;
use platform::testkit::TestIssuer;
use platform::testkit::error_reason as reason;
use platform::with_db;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

type Client = PaymentServiceClient<Channel>;

// ---------------------------------------------------------------------------------------------------------
// The ledger stand-in.

#[derive(Default)]
struct LedgerState {
    accounts: HashMap<String, Account>,
    transactions: HashMap<String, Transaction>,
    record_calls: usize,
}

/// An in-memory ledger: CreateAccount idempotent by code, RecordTransaction idempotent by id and refusing
/// unbalanced transactions; `down` makes every call fail with UNAVAILABLE.
#[derive(Clone, Default)]
struct FakeLedger {
    state: Arc<Mutex<LedgerState>>,
    down: Arc<AtomicBool>,
}

impl FakeLedger {
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check(
        &self,
        request_token: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    ) -> Result<(), Status> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("ledger is down (test)"));
        }
        if request_token.and_then(|v| v.to_str().ok()) != Some("Bearer ledger-test-token") {
            return Err(Status::unauthenticated("the payments service's token is missing"));
        }
        Ok(())
    }

    fn transaction(&self, id: &str) -> Option<Transaction> {
        self.state.lock().expect("lock").transactions.get(id).cloned()
    }

    fn transaction_count(&self) -> usize {
        self.state.lock().expect("lock").transactions.len()
    }

    fn account_id(&self, code: &str) -> Option<String> {
        self.state.lock().expect("lock").accounts.get(code).map(|a| a.id.clone())
    }
}

#[tonic::async_trait]
impl LedgerService for FakeLedger {
    async fn create_account(
        &self,
        request: Request<CreateAccountRequest>,
    ) -> Result<Response<CreateAccountResponse>, Status> {
        self.check(request.metadata().get("authorization"))?;
        let req = request.into_inner();
        let mut state = self.state.lock().expect("lock");
        let account = state
            .accounts
            .entry(req.code.clone())
            .or_insert_with(|| Account {
                id: uuid::Uuid::now_v7().to_string(),
                code: req.code.clone(),
                name: req.name.clone(),
                r#type: req.r#type,
                currency: req.currency.clone(),
                balance: None,
                create_time: None,
            })
            .clone();
        if account.r#type != req.r#type || account.currency != req.currency {
            return Err(Status::already_exists("account code taken"));
        }
        Ok(Response::new(CreateAccountResponse { account: Some(account) }))
    }

    async fn record_transaction(
        &self,
        request: Request<RecordTransactionRequest>,
    ) -> Result<Response<RecordTransactionResponse>, Status> {
        self.check(request.metadata().get("authorization"))?;
        let req = request.into_inner();
        let mut state = self.state.lock().expect("lock");
        state.record_calls += 1;
        let sum: i64 = req.postings.iter().map(|p| p.amount.as_ref().map_or(0, |m| m.amount_minor)).sum();
        if sum != 0 || req.postings.len() < 2 {
            return Err(Status::invalid_argument("unbalanced"));
        }
        let known: Vec<String> = state.accounts.values().map(|a| a.id.clone()).collect();
        if !req.postings.iter().all(|p| known.contains(&p.account_id)) {
            return Err(Status::invalid_argument("unknown account"));
        }
        let transaction = Transaction {
            id: req.transaction_id.clone(),
            description: req.description,
            postings: req.postings,
            metadata: req.metadata,
            reverses_transaction_id: req.reverses_transaction_id,
            create_time: None,
        };
        let stored = state.transactions.entry(req.transaction_id).or_insert(transaction.clone()).clone();
        if stored.postings != transaction.postings {
            return Err(Status::already_exists("TRANSACTION_ID_REUSED"));
        }
        Ok(Response::new(RecordTransactionResponse { transaction: Some(stored) }))
    }

    async fn get_account(&self, _: Request<GetAccountRequest>) -> Result<Response<GetAccountResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }

    async fn list_accounts(&self, _: Request<ListAccountsRequest>) -> Result<Response<ListAccountsResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }

    async fn list_account_entries(
        &self,
        _: Request<ListAccountEntriesRequest>,
    ) -> Result<Response<ListAccountEntriesResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }

    async fn get_transaction(
        &self,
        _: Request<GetTransactionRequest>,
    ) -> Result<Response<GetTransactionResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }

    async fn list_transactions(
        &self,
        _: Request<api::mercato::ledger::v1::ListTransactionsRequest>,
    ) -> Result<Response<api::mercato::ledger::v1::ListTransactionsResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }
}

// ---------------------------------------------------------------------------------------------------------
// A processor wrapper that can make refunds fail: shows that tests can inject their own processor.

struct FlakyRefunds {
    inner: SimulatedProcessor,
    fail_refunds: AtomicBool,
}

#[tonic::async_trait]
impl PaymentProcessor for FlakyRefunds {
    async fn charge(
        &self,
        amount_minor: i64,
        currency: &str,
        payment_method: &str,
        idempotency_key: &str,
    ) -> Result<ChargeOutcome, ProcessorError> {
        self.inner.charge(amount_minor, currency, payment_method, idempotency_key).await
    }

    async fn refund(&self, charge_reference: &str, amount_minor: i64, key: &str) -> Result<String, ProcessorError> {
        if self.fail_refunds.load(Ordering::SeqCst) {
            return Err(ProcessorError::Transient("refunds are down (test)".into()));
        }
        self.inner.refund(charge_reference, amount_minor, key).await
    }
}

// ---------------------------------------------------------------------------------------------------------
// The service under test.

struct Server {
    client: Client,
    issuer: Arc<TestIssuer>,
    ledger: FakeLedger,
    db: Db,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), payments::Error>>,
    ledger_stop: CancellationToken,
}

impl Server {
    async fn start(db: Db, processor: Arc<dyn PaymentProcessor>) -> Self {
        let ledger = FakeLedger::default();
        let ledger_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ledger");
        let ledger_url = format!("http://{}", ledger_listener.local_addr().expect("addr"));
        let ledger_stop = CancellationToken::new();
        let stopping = ledger_stop.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(LedgerServiceServer::new(ledger.clone()))
                .serve_with_incoming_shutdown(TcpListenerStream::new(ledger_listener), async move {
                    stopping.cancelled().await
                }),
        );
        let ledger_client = LedgerClient::new(
            platform::grpc::channel(&ledger_url).expect("ledger channel"),
            Arc::new(StaticToken("ledger-test-token".into())),
        )
        .with_retry_interval(Duration::from_millis(200));

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = Arc::new(TestIssuer::new().expect("issuer"));
        let shutdown = CancellationToken::new();
        let bus = Arc::new(platform::events::InProcessBus::new());
        let task = tokio::spawn(payments::serve(
            listener,
            db.clone(),
            issuer.verifier(),
            processor,
            ledger_client,
            bus,
            shutdown.clone(),
        ));
        let url = format!("http://{addr}");
        let client = PaymentServiceClient::new(platform::testkit::connect_when_up(&url, "payments").await);
        Self { client, issuer, ledger, db, shutdown, task, ledger_stop }
    }

    async fn simulated(db: Db) -> (Self, Arc<SimulatedProcessor>) {
        let processor = Arc::new(SimulatedProcessor::new(db.clone()));
        (Self::start(db, processor.clone()).await, processor)
    }

    /// Stops the server after checking that payments and ledger agree.
    async fn stop(self) {
        let problems = payments::audit(&self.db).await.expect("audit");
        assert!(problems.is_empty(), "audit: {problems:#?}");
        self.shutdown.cancel();
        self.task.await.expect("join").expect("served cleanly");
        self.ledger_stop.cancel();
    }

    fn customer(&self, id: &str) -> String {
        self.issuer.token(id, &["payment:write", "orders:write"], &["customer"])
    }

    fn service(&self) -> String {
        self.issuer.token("orders", &["payment:write", "payment:refund"], &["service"])
    }

    fn admin(&self) -> String {
        self.issuer.token("admin-1", &["payment:write", "orders:admin", "refund:write"], &["customer", "admin"])
    }

    /// A staff member holding `scope` (besides a customer's).
    fn staff(&self, scope: &str) -> String {
        self.issuer.token("staff-1", &["payment:write", scope], &["customer", "staff"])
    }

    async fn create(&self, token: &str, request: CreatePaymentRequest) -> Result<Payment, Status> {
        let response = self.client.clone().create_payment(with_token(request, token)).await?;
        Ok(response.into_inner().payment.expect("payment"))
    }

    async fn get(&self, token: &str, id: &str) -> Result<Payment, Status> {
        let response = self.client.clone().get_payment(with_token(GetPaymentRequest { id: id.into() }, token)).await?;
        Ok(response.into_inner().payment.expect("payment"))
    }

    async fn refund(
        &self,
        payment_id: &str,
        refund_id: &str,
        amount_minor: i64,
    ) -> Result<RefundPaymentResponse, Status> {
        let request = RefundPaymentRequest {
            payment_id: payment_id.into(),
            refund_id: refund_id.into(),
            amount: eur(amount_minor),
            reason: "customer asked".into(),
            rest: false,
        };
        Ok(self.client.clone().refund_payment(with_token(request, &self.service())).await?.into_inner())
    }

    /// Refunds whatever is left of `payment_id`.
    async fn refund_rest(&self, payment_id: &str, refund_id: &str) -> Result<RefundPaymentResponse, Status> {
        let request = RefundPaymentRequest {
            payment_id: payment_id.into(),
            refund_id: refund_id.into(),
            reason: "order cancelled".into(),
            rest: true,
            ..RefundPaymentRequest::default()
        };
        Ok(self.client.clone().refund_payment(with_token(request, &self.service())).await?.into_inner())
    }

    async fn events(&self, subject: &str) -> Vec<String> {
        with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT event_type FROM outbox WHERE subject = $1 ORDER BY create_time, id")
                .bind(subject)
                .fetch_all(pool)
                .await
                .expect("outbox")
        })
    }

    async fn count(&self, sql: &str) -> i64 {
        with_db!(&self.db, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.expect("count"))
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

fn pay(order: &str, amount_minor: i64, method: &str, key: &str) -> CreatePaymentRequest {
    CreatePaymentRequest {
        order_id: order.into(),
        amount: eur(amount_minor),
        payment_method: method.into(),
        idempotency_key: key.into(),
        customer_id: String::new(),
        tax: None,
    }
}

fn fields(status: &Status) -> Vec<String> {
    let details = platform::error::decode_details(status).expect("details");
    let bad = details.details.iter().find(|d| d.type_url.ends_with("google.rpc.BadRequest")).expect("BadRequest");
    let bad = api::google::rpc::BadRequest::decode(bad.value.as_slice()).expect("BadRequest");
    bad.field_violations.into_iter().map(|v| v.field).collect()
}

fn status_of(p: &Payment) -> PaymentStatus {
    PaymentStatus::try_from(p.status).expect("known status")
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios.

async fn approval_captures_and_posts_to_the_ledger(db: Db) {
    let (server, processor) = Server::simulated(db).await;
    let alice = server.customer("alice");
    let payment = server.create(&alice, pay("order-1", 1999, "tok_visa", "key-1")).await.expect("create");
    assert_eq!(status_of(&payment), PaymentStatus::Captured);
    assert_eq!(payment.customer_id, "alice");
    assert_eq!(payment.amount, eur(1999));
    assert_eq!(payment.refunded_amount, eur(0));
    assert!(payment.processor_reference.starts_with("ch_"));
    assert!(payment.failure_code.is_empty() && payment.failure_reason.is_empty());
    assert_eq!(processor.charge_calls(), 1);

    let tx = server.ledger.transaction(&format!("payment:{}:capture", payment.id)).expect("posted at once");
    let assets = server.ledger.account_id("assets:processor:eur").expect("asset account");
    let sales = server.ledger.account_id("revenue:sales:eur").expect("revenue account");
    let amounts: Vec<_> = tx.postings.iter().map(|p| (p.account_id.clone(), p.amount.clone())).collect();
    assert_eq!(amounts, [(assets, eur(1999)), (sales, eur(-1999))]);
    assert_eq!(tx.metadata.get("payment_id"), Some(&payment.id));
    assert_eq!(tx.metadata.get("order_id"), Some(&"order-1".to_owned()));
    assert_eq!(server.events(&payment.id).await, ["payment.captured"]);

    // A second capture reuses the cached accounts.
    let mastercard = server.create(&alice, pay("order-2", 500, "tok_mastercard", "key-2")).await.expect("create");
    assert_eq!(status_of(&mastercard), PaymentStatus::Captured);
    assert_eq!(server.ledger.transaction_count(), 2);
    assert_eq!(server.get(&alice, &payment.id).await.expect("get"), payment);
    server.stop().await;
}

async fn declines_fail_with_readable_reasons(db: Db) {
    let (server, processor) = Server::simulated(db).await;
    let bob = server.customer("bob");
    let declined = server.create(&bob, pay("o-1", 1000, "tok_chargeDeclined", "k-1")).await.expect("create");
    assert_eq!(status_of(&declined), PaymentStatus::Failed);
    assert_eq!(
        (declined.failure_code.as_str(), declined.failure_reason.as_str()),
        ("card_declined", "Your card was declined.")
    );
    let poor = server.create(&bob, pay("o-2", 1000, "tok_insufficientFunds", "k-2")).await.expect("create");
    assert_eq!(status_of(&poor), PaymentStatus::Failed);
    assert_eq!(
        (poor.failure_code.as_str(), poor.failure_reason.as_str()),
        ("insufficient_funds", "Your card has insufficient funds.")
    );
    assert_eq!(server.ledger.transaction_count(), 0);
    assert_eq!(server.events(&declined.id).await, ["payment.failed"]);
    // A replay returns the failed payment; the processor is not asked again.
    assert_eq!(server.create(&bob, pay("o-1", 1000, "tok_chargeDeclined", "k-1")).await.expect("replay"), declined);
    assert_eq!(processor.charge_calls(), 2);

    // An unknown token is the client's mistake: no payment, and the key is free again.
    let bogus = server.create(&bob, pay("o-3", 1000, "tok_bogus", "k-3")).await.expect_err("unknown token");
    assert_eq!(bogus.code(), Code::InvalidArgument);
    assert_eq!(fields(&bogus), ["payment_method"]);
    let fixed = server.create(&bob, pay("o-3", 1000, "tok_visa", "k-3")).await.expect("retry with the key");
    assert_eq!(status_of(&fixed), PaymentStatus::Captured);
    assert_eq!(server.count("SELECT COUNT(*) FROM payments").await, 3);
    server.stop().await;
}

async fn processing_errors_are_retried_then_fail(db: Db) {
    let (server, processor) = Server::simulated(db).await;
    let carol = server.customer("carol");
    let payment = server.create(&carol, pay("o-1", 700, "tok_processingError", "k")).await.expect("create");
    assert_eq!(status_of(&payment), PaymentStatus::Failed);
    assert_eq!(payment.failure_code, "processing_error");
    assert_eq!(payment.failure_reason, "We could not process your payment. Please try again.");
    assert_eq!(processor.charge_calls(), payments::domain::CHARGE_TRIES as usize);
    assert_eq!(server.ledger.transaction_count(), 0);
    assert_eq!(server.events(&payment.id).await, ["payment.failed"]);
    server.stop().await;
}

async fn concurrent_duplicates_charge_once(db: Db) {
    let (server, processor) = Server::simulated(db).await;
    let server = Arc::new(server);
    let dave = server.customer("dave");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (server, dave) = (server.clone(), dave.clone());
        tasks.push(tokio::spawn(async move { server.create(&dave, pay("o-1", 4200, "tok_visa", "same-key")).await }));
    }
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(task.await.expect("join").expect("every duplicate succeeds"));
    }
    assert!(responses.iter().all(|r| *r == responses[0]), "50 identical responses");
    assert_eq!(processor.charge_calls(), 1);
    assert_eq!(server.count("SELECT COUNT(*) FROM payments").await, 1);
    assert_eq!(server.ledger.transaction_count(), 1);
    assert_eq!(server.events(&responses[0].id).await, ["payment.captured"]);
    let server = Arc::into_inner(server).expect("sole owner");
    server.stop().await;
}

async fn keys_are_required_and_bound_to_their_request(db: Db) {
    let (server, processor) = Server::simulated(db).await;
    let erin = server.customer("erin");
    let first = server.create(&erin, pay("o-1", 1000, "tok_visa", "k-1")).await.expect("create");
    let reused = server.create(&erin, pay("o-1", 1001, "tok_visa", "k-1")).await.expect_err("other body");
    assert_eq!(reused.code(), Code::InvalidArgument);
    assert_eq!(reason(&reused), "IDEMPOTENCY_KEY_REUSED");

    let missing = server.create(&erin, pay("o-2", 1000, "tok_visa", "")).await.expect_err("no key");
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert_eq!(fields(&missing), ["idempotency_key"]);

    // The Idempotency-Key header (metadata) works, and wins over the field.
    let mut request = with_token(pay("o-3", 1000, "tok_visa", "field-key"), &erin);
    request.metadata_mut().insert("idempotency-key", "header-key".parse().expect("ascii"));
    let by_header = server.client.clone().create_payment(request).await.expect("create").into_inner().payment;
    let replay = server.create(&erin, pay("o-3", 1000, "tok_visa", "header-key")).await.expect("replay");
    assert_eq!(by_header, Some(replay));

    // Keys are per customer: another customer may use the same key.
    let frank = server.customer("frank");
    let other = server.create(&frank, pay("o-1", 1000, "tok_visa", "k-1")).await.expect("frank's own key");
    assert_ne!(other.id, first.id);

    let bad =
        CreatePaymentRequest { amount: Some(Money { currency: "eur".into(), amount_minor: 0 }), ..pay("", 0, "", "k") };
    let invalid = server.create(&erin, bad).await.expect_err("invalid");
    assert_eq!(fields(&invalid), ["order_id", "amount.amount_minor", "amount.currency", "payment_method"]);
    assert_eq!(processor.charge_calls(), 3);
    server.stop().await;
}

async fn payments_are_private(db: Db) {
    let (server, _) = Server::simulated(db).await;
    let alice = server.customer("alice");
    let payment = server.create(&alice, pay("o-1", 1000, "tok_visa", "k")).await.expect("create");
    let stranger = server.get(&server.customer("bob"), &payment.id).await.expect_err("not bob's");
    assert_eq!(stranger.code(), Code::NotFound);
    assert_eq!(server.get(&alice, "no-such-payment").await.expect_err("unknown").code(), Code::NotFound);
    assert_eq!(server.get(&server.admin(), &payment.id).await.expect("admin"), payment);
    assert_eq!(server.get(&server.staff("refund:write"), &payment.id).await.expect("finance"), payment);
    assert_eq!(server.get(&server.staff("orders:admin"), &payment.id).await.expect("fulfilment"), payment);
    let catalog = server.get(&server.staff("catalog:write"), &payment.id).await.expect_err("not their job");
    assert_eq!(catalog.code(), Code::NotFound);
    let role_alone = server.issuer.token("admin-2", &["payment:write"], &["customer", "admin"]);
    let by_role = server.get(&role_alone, &payment.id).await.expect_err("scopes decide, not role names");
    assert_eq!(by_role.code(), Code::NotFound);
    assert_eq!(server.get(&server.service(), &payment.id).await.expect("service"), payment);
    let anonymous = server.client.clone().get_payment(GetPaymentRequest { id: payment.id.clone() }).await;
    assert_eq!(anonymous.expect_err("no token").code(), Code::Unauthenticated);
    server.stop().await;
}

async fn only_services_choose_the_customer(db: Db) {
    let (server, _) = Server::simulated(db).await;
    let for_alice = CreatePaymentRequest { customer_id: "alice".into(), ..pay("o-1", 1000, "tok_visa", "k") };
    let payment = server.create(&server.service(), for_alice.clone()).await.expect("service sets the customer");
    assert_eq!(payment.customer_id, "alice");
    assert_eq!(server.get(&server.customer("alice"), &payment.id).await.expect("alice sees it").id, payment.id);

    let mallory = server.create(&server.customer("mallory"), for_alice).await.expect_err("customer sets another");
    assert_eq!(mallory.code(), Code::PermissionDenied);
    let own = CreatePaymentRequest { customer_id: "mallory".into(), ..pay("o-2", 1000, "tok_visa", "k") };
    assert_eq!(server.create(&server.customer("mallory"), own).await.expect("own id").customer_id, "mallory");
    let nobody = server.create(&server.service(), pay("o-3", 1000, "tok_visa", "k3")).await.expect_err("no customer");
    assert_eq!(fields(&nobody), ["customer_id"]);
    let no_scope = server.issuer.token("gina", &["orders:write"], &["customer"]);
    let denied = server.create(&no_scope, pay("o-4", 1000, "tok_visa", "k4")).await.expect_err("scope");
    assert_eq!(denied.code(), Code::PermissionDenied);
    server.stop().await;
}

async fn ledger_outage_is_caught_up(db: Db) {
    let (server, _) = Server::simulated(db).await;
    let alice = server.customer("alice");
    server.ledger.set_down(true);
    let payment = server.create(&alice, pay("o-1", 2500, "tok_visa", "k")).await.expect("captured without ledger");
    assert_eq!(status_of(&payment), PaymentStatus::Captured);
    let refunded = server.refund(&payment.id, "refund-1", 1000).await.expect("refund without ledger");
    assert_eq!(refunded.payment.expect("payment").refunded_amount, eur(1000));
    assert_eq!(server.count("SELECT COUNT(*) FROM payments WHERE ledger_posted = FALSE").await, 1);
    let problems = payments::audit(&server.db).await.expect("audit");
    assert_eq!(problems.len(), 2, "{problems:#?}");
    // A live system's audit leaves postings that may still be in flight alone.
    let live = payments::audit_settled(&server.db, Duration::from_secs(60)).await.expect("audit");
    assert_eq!(live, Vec::<String>::new(), "just captured: still being posted");

    server.ledger.set_down(false);
    let mut waited = Duration::ZERO;
    while !payments::audit(&server.db).await.expect("audit").is_empty() {
        assert!(waited < Duration::from_secs(10), "the retry loop did not post the backlog");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    let capture = server.ledger.transaction(&format!("payment:{}:capture", payment.id)).expect("capture posted");
    assert_eq!(capture.postings.len(), 2);
    let refund = server.ledger.transaction(&format!("payment:{}:refund:refund-1", payment.id)).expect("refund posted");
    let refunds_account = server.ledger.account_id("revenue:refunds:eur").expect("refunds account");
    assert_eq!(refund.postings[0].account_id, refunds_account);
    assert_eq!(refund.postings[0].amount, eur(1000));
    assert_eq!(refund.postings[1].amount, eur(-1000));
    server.stop().await;
}

async fn refunds_partial_full_and_replayed(db: Db) {
    let (server, processor) = Server::simulated(db).await;
    let alice = server.customer("alice");
    let payment = server.create(&alice, pay("o-1", 1000, "tok_visa", "k")).await.expect("create");

    let first = server.refund(&payment.id, "r-1", 400).await.expect("partial refund");
    let after = first.payment.clone().expect("payment");
    assert_eq!(status_of(&after), PaymentStatus::PartiallyRefunded);
    assert_eq!(after.refunded_amount, eur(400));
    assert!(first.processor_reference.starts_with("re_"));
    let replay = server.refund(&payment.id, "r-1", 400).await.expect("replay");
    assert_eq!(replay.processor_reference, first.processor_reference);
    assert_eq!(replay.payment.expect("payment").refunded_amount, eur(400));
    let reused = server.refund(&payment.id, "r-1", 300).await.expect_err("same id, other amount");
    assert_eq!((reused.code(), reason(&reused)), (Code::InvalidArgument, "IDEMPOTENCY_KEY_REUSED".to_owned()));

    let over = server.refund(&payment.id, "r-2", 700).await.expect_err("over-refund");
    assert_eq!((over.code(), reason(&over)), (Code::FailedPrecondition, "REFUND_EXCEEDS_CAPTURED".to_owned()));
    let rest = server.refund(&payment.id, "r-3", 600).await.expect("the rest");
    let full = rest.payment.expect("payment");
    assert_eq!(status_of(&full), PaymentStatus::Refunded);
    assert_eq!(full.refunded_amount, eur(1000));
    let none_left = server.refund(&payment.id, "r-4", 1).await.expect_err("nothing left");
    assert_eq!(none_left.code(), Code::FailedPrecondition);
    assert_eq!(processor.refund_calls(), 2);

    assert!(server.ledger.transaction(&format!("payment:{}:refund:r-1", payment.id)).is_some());
    assert!(server.ledger.transaction(&format!("payment:{}:refund:r-3", payment.id)).is_some());
    assert_eq!(server.events(&payment.id).await, ["payment.captured", "payment.refunded", "payment.refunded"]);

    // What cannot be refunded at all.
    let failed = server.create(&alice, pay("o-2", 1000, "tok_chargeDeclined", "k2")).await.expect("create");
    let refused = server.refund(&failed.id, "r-5", 100).await.expect_err("failed payment");
    assert_eq!((refused.code(), reason(&refused)), (Code::FailedPrecondition, "PAYMENT_NOT_REFUNDABLE".to_owned()));
    assert_eq!(server.refund("no-such-payment", "r-6", 100).await.expect_err("unknown").code(), Code::NotFound);
    let usd = RefundPaymentRequest {
        payment_id: payment.id.clone(),
        refund_id: "r-7".into(),
        amount: Some(Money { currency: "USD".into(), amount_minor: 1 }),
        reason: String::new(),
        rest: false,
    };
    let wrong = server.client.clone().refund_payment(with_token(usd, &server.service())).await.expect_err("USD");
    assert_eq!(fields(&wrong), ["amount.currency"]);
    let zero = server.refund(&payment.id, "r-8", 0).await.expect_err("zero");
    assert_eq!(fields(&zero), ["amount.amount_minor"]);
    let by_customer = RefundPaymentRequest {
        payment_id: payment.id.clone(),
        refund_id: "r-9".into(),
        amount: eur(1),
        reason: String::new(),
        rest: false,
    };
    let denied = server.client.clone().refund_payment(with_token(by_customer, &alice)).await.expect_err("scope");
    assert_eq!(denied.code(), Code::PermissionDenied);
    server.stop().await;
}

async fn the_rest_is_whatever_is_left(db: Db) {
    let (server, processor) = Server::simulated(db).await;
    let alice = server.customer("alice");
    let payment = server.create(&alice, pay("o-1", 1000, "tok_visa", "k")).await.expect("create");
    server.refund(&payment.id, "scratch", 300).await.expect("a part");

    let rest = server.refund_rest(&payment.id, "order:o-1:cancel").await.expect("the rest");
    assert_eq!(rest.refunded, eur(700), "what this refund gave back");
    let after = rest.payment.expect("payment");
    assert_eq!((status_of(&after), after.refunded_amount), (PaymentStatus::Refunded, eur(1000)));
    let replay = server.refund_rest(&payment.id, "order:o-1:cancel").await.expect("a repeat");
    assert_eq!((replay.refunded, replay.processor_reference), (eur(700), rest.processor_reference));
    // Nothing left is no error, and no refund.
    let nothing = server.refund_rest(&payment.id, "another").await.expect("nothing left");
    assert_eq!(nothing.refunded, eur(0));
    assert_eq!(processor.refund_calls(), 2);
    assert!(server.ledger.transaction(&format!("payment:{}:refund:order:o-1:cancel", payment.id)).is_some());
    assert_eq!(server.events(&payment.id).await, ["payment.captured", "payment.refunded", "payment.refunded"]);

    // The rest takes no amount, and a payment never captured has none.
    let both = RefundPaymentRequest {
        payment_id: payment.id.clone(),
        refund_id: "both".into(),
        amount: eur(1),
        reason: String::new(),
        rest: true,
    };
    let both = server.client.clone().refund_payment(with_token(both, &server.service())).await.expect_err("both");
    assert_eq!(fields(&both), ["amount"]);
    let failed = server.create(&alice, pay("o-2", 1000, "tok_chargeDeclined", "k2")).await.expect("create");
    let refused = server.refund_rest(&failed.id, "r-failed").await.expect_err("failed payment");
    assert_eq!((refused.code(), reason(&refused)), (Code::FailedPrecondition, "PAYMENT_NOT_REFUNDABLE".to_owned()));
    server.stop().await;
}

async fn concurrent_refunds_never_exceed_the_capture(db: Db) {
    let (server, processor) = Server::simulated(db).await;
    let payment = server.create(&server.customer("alice"), pay("o-1", 1000, "tok_visa", "k")).await.expect("create");
    let server = Arc::new(server);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (server, id) = (server.clone(), payment.id.clone());
        tasks.push(tokio::spawn(async move { server.refund(&id, &format!("r-{i}"), 600).await }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.expect("join") {
            Ok(_) => ok += 1,
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(processor.refund_calls(), 1);
    let after = server.get(&server.service(), &payment.id).await.expect("get");
    assert_eq!(after.refunded_amount, eur(600));
    assert_eq!(status_of(&after), PaymentStatus::PartiallyRefunded);
    let server = Arc::into_inner(server).expect("sole owner");
    server.stop().await;
}

async fn a_failed_processor_refund_gives_the_amount_back(db: Db) {
    let processor =
        Arc::new(FlakyRefunds { inner: SimulatedProcessor::new(db.clone()), fail_refunds: AtomicBool::new(false) });
    let server = Server::start(db, processor.clone()).await;
    let payment = server.create(&server.customer("alice"), pay("o-1", 1000, "tok_visa", "k")).await.expect("create");
    processor.fail_refunds.store(true, Ordering::SeqCst);
    let down = server.refund(&payment.id, "r-1", 1000).await.expect_err("processor down");
    assert_eq!(down.code(), Code::Unavailable);
    let after = server.get(&server.service(), &payment.id).await.expect("get");
    assert_eq!((status_of(&after), after.refunded_amount), (PaymentStatus::Captured, eur(0)));
    // The refunds service retries with the same refund id once the processor is back.
    processor.fail_refunds.store(false, Ordering::SeqCst);
    let done = server.refund(&payment.id, "r-1", 1000).await.expect("retry");
    assert_eq!(status_of(&done.payment.expect("payment")), PaymentStatus::Refunded);
    assert_eq!(processor.inner.refund_calls(), 1);
    server.stop().await;
}

async fn list(server: &Server, token: &str, request: ListPaymentsRequest) -> Result<ListPaymentsResponse, Status> {
    Ok(server.client.clone().list_payments(with_token(request, token)).await?.into_inner())
}

/// Every payment `request` lists, read a page of `page_size` at a time.
async fn list_all(server: &Server, token: &str, request: ListPaymentsRequest, page_size: i32) -> Vec<Payment> {
    let mut listed = Vec::new();
    let mut request = ListPaymentsRequest { page_size, ..request };
    for _ in 0..50 {
        let page = list(server, token, request.clone()).await.expect("lists");
        assert!(page.payments.len() <= page_size as usize, "a page holds at most page_size");
        listed.extend(page.payments);
        if page.next_page_token.is_empty() {
            return listed;
        }
        request.page_token = page.next_page_token;
    }
    panic!("the pages never end: {:?}", ids(&listed));
}

fn ids(payments: &[Payment]) -> Vec<&str> {
    payments.iter().map(|p| p.id.as_str()).collect()
}

/// Customers list their own payments, newest first, a page at a time; staff who read every payment list
/// everyone's and filter by customer, order and state; nobody else lists another's.
async fn payments_are_listed_newest_first_to_whom_they_belong(db: Db) {
    let (server, _) = Server::simulated(db).await;
    let (alice, bob) = (server.customer("alice"), server.customer("bob"));
    let mut alices = Vec::new();
    for (n, method) in ["tok_visa", "tok_chargeDeclined", "tok_mastercard"].into_iter().enumerate() {
        alices.push(
            server
                .create(&alice, pay(&format!("order-a{n}"), 100 + n as i64, method, &format!("a{n}")))
                .await
                .expect("pays"),
        );
    }
    let bobs = server.create(&bob, pay("order-b", 700, "tok_visa", "b")).await.expect("pays");
    server.refund(&alices[0].id, "refund-a0", 100).await.expect("refunds in full");
    let refunded = server.get(&alice, &alices[0].id).await.expect("gets");
    assert_eq!(status_of(&refunded), PaymentStatus::Refunded);

    // Alice's own, newest first, as GetPayment shows them; the same a page at a time.
    let own = list_all(&server, &alice, ListPaymentsRequest::default(), 100).await;
    let newest_first: Vec<&str> = alices.iter().rev().map(|p| p.id.as_str()).collect();
    assert_eq!(ids(&own), newest_first);
    assert_eq!(own[2], refunded, "listed as they are now");
    assert_eq!(list_all(&server, &alice, ListPaymentsRequest::default(), 1).await, own, "none repeated or skipped");
    let first = list(&server, &alice, ListPaymentsRequest { page_size: 2, ..Default::default() }).await.expect("lists");
    assert_eq!((first.payments.len(), first.next_page_token.is_empty()), (2, false));

    // Naming herself is the same; naming Bob is refused, and so is a staff member without the scopes.
    let herself = ListPaymentsRequest { customer_id: "alice".into(), ..Default::default() };
    assert_eq!(list_all(&server, &alice, herself, 100).await, own);
    let bobs_request = ListPaymentsRequest { customer_id: "bob".into(), ..Default::default() };
    let denied = list(&server, &alice, bobs_request.clone()).await.expect_err("not hers");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let catalog = list(&server, &server.staff("catalog:write"), bobs_request.clone()).await.expect_err("not theirs");
    assert_eq!(catalog.code(), Code::PermissionDenied);
    assert_eq!(ids(&list_all(&server, &bob, ListPaymentsRequest::default(), 100).await), [bobs.id.as_str()]);

    // Staff and services: everyone's, or filtered.
    for staff in [server.staff("refund:write"), server.staff("orders:admin"), server.admin(), server.service()] {
        let everyone = list_all(&server, &staff, ListPaymentsRequest::default(), 2).await;
        assert_eq!(ids(&everyone), [&[bobs.id.as_str()][..], &newest_first].concat());
        assert_eq!(ids(&list_all(&server, &staff, bobs_request.clone(), 100).await), [bobs.id.as_str()]);
    }
    let finance = server.staff("refund:write");
    let of_order = ListPaymentsRequest { order_id: "order-a1".into(), ..Default::default() };
    assert_eq!(ids(&list_all(&server, &finance, of_order, 100).await), [alices[1].id.as_str()]);
    let failed = ListPaymentsRequest { status: PaymentStatus::Failed as i32, ..Default::default() };
    assert_eq!(ids(&list_all(&server, &finance, failed, 100).await), [alices[1].id.as_str()]);
    let captured_of_alice = ListPaymentsRequest {
        customer_id: "alice".into(),
        status: PaymentStatus::Captured as i32,
        ..Default::default()
    };
    assert_eq!(ids(&list_all(&server, &finance, captured_of_alice, 100).await), [alices[2].id.as_str()]);
    // A period: from Alice's second payment (inclusive) to her third (exclusive).
    let made = |p: &Payment| p.create_time;
    let second_only =
        ListPaymentsRequest { start_time: made(&alices[1]), end_time: made(&alices[2]), ..Default::default() };
    assert_eq!(ids(&list_all(&server, &finance, second_only.clone(), 100).await), [alices[1].id.as_str()]);
    assert_eq!(ids(&list_all(&server, &alice, second_only, 100).await), [alices[1].id.as_str()], "her own too");
    let of_nobody = ListPaymentsRequest { order_id: "no-such-order".into(), ..Default::default() };
    let empty = list(&server, &finance, of_nobody).await.expect("lists");
    assert!(empty.payments.is_empty() && empty.next_page_token.is_empty());

    // Bad requests name every bad field; no token is UNAUTHENTICATED.
    let bad = ListPaymentsRequest {
        page_size: -1,
        page_token: "not a token!".into(),
        order_id: "x".repeat(65),
        status: 99,
        start_time: alices[2].create_time,
        end_time: alices[1].create_time,
        ..Default::default()
    };
    let invalid = list(&server, &alice, bad).await.expect_err("bad");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert_eq!(fields(&invalid), ["page_size", "page_token", "order_id", "status", "end_time"]);
    let anonymous = server.client.clone().list_payments(ListPaymentsRequest::default()).await;
    assert_eq!(anonymous.expect_err("no token").code(), Code::Unauthenticated);
    server.stop().await;
}

macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let (db, _dir) = platform::testkit::sqlite("payments").await.expect("sqlite");
                    super::$scenario(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let Some(db) = platform::testkit::postgres("payments").await else { return };
                    super::$scenario(db).await;
                }
            )*
        }
    };
}

/// A payment whose amount includes tax books the tax as owed, not as sales; each refund gives back its share.
async fn taxed_sales_owe_their_tax(db: Db) {
    let (server, _) = Server::simulated(db).await;
    let alice = server.customer("alice");
    let taxed = CreatePaymentRequest { tax: eur(1900), ..pay("o-1", 11_900, "tok_visa", "k-1") };
    let payment = server.create(&alice, taxed.clone()).await.expect("create");
    assert_eq!((payment.amount.clone(), payment.tax.clone()), (eur(11_900), eur(1900)));
    assert_eq!(server.create(&alice, taxed).await.expect("replay"), payment);
    let other_tax = CreatePaymentRequest { tax: eur(1800), ..pay("o-1", 11_900, "tok_visa", "k-1") };
    assert_eq!(reason(&server.create(&alice, other_tax).await.expect_err("other tax")), "IDEMPOTENCY_KEY_REUSED");

    let account = |code: &str| server.ledger.account_id(code).expect(code);
    let postings = |id: &str| -> Vec<(String, Option<Money>)> {
        let tx = server.ledger.transaction(id).expect("posted");
        tx.postings.into_iter().map(|p| (p.account_id, p.amount)).collect()
    };
    let (assets, sales, tax) =
        (account("assets:processor:eur"), account("revenue:sales:eur"), account("liabilities:tax:eur"));
    assert_eq!(
        postings(&format!("payment:{}:capture", payment.id)),
        [(assets.clone(), eur(11_900)), (sales, eur(-10_000)), (tax.clone(), eur(-1900))]
    );
    // Half back gives back half the tax; the rest, the rest of it: nothing is owed on what was refunded.
    server.refund(&payment.id, "r-1", 5950).await.expect("half");
    server.refund(&payment.id, "r-2", 5950).await.expect("the rest");
    let refunds = account("revenue:refunds:eur");
    for refund in ["r-1", "r-2"] {
        assert_eq!(
            postings(&format!("payment:{}:refund:{refund}", payment.id)),
            [(refunds.clone(), eur(5000)), (assets.clone(), eur(-5950)), (tax.clone(), eur(950))]
        );
    }
    // Without tax, no tax account is posted to.
    let plain = server.create(&alice, pay("o-2", 500, "tok_visa", "k-2")).await.expect("create");
    assert_eq!(plain.tax, eur(0));
    assert_eq!(postings(&format!("payment:{}:capture", plain.id)).len(), 2);

    let wrong = |tax| CreatePaymentRequest { tax: Some(tax), ..pay("o-3", 1000, "tok_visa", "k-3") };
    let usd = server.create(&alice, wrong(Money { currency: "USD".into(), amount_minor: 10 })).await;
    assert_eq!(fields(&usd.expect_err("other currency")), ["tax.currency"]);
    let more = server.create(&alice, wrong(Money { currency: "EUR".into(), amount_minor: 1001 })).await;
    assert_eq!(fields(&more.expect_err("more than the amount")), ["tax.amount_minor"]);
    server.stop().await;
}

on_both_engines!(
    taxed_sales_owe_their_tax,
    the_rest_is_whatever_is_left,
    approval_captures_and_posts_to_the_ledger,
    declines_fail_with_readable_reasons,
    processing_errors_are_retried_then_fail,
    concurrent_duplicates_charge_once,
    keys_are_required_and_bound_to_their_request,
    payments_are_private,
    only_services_choose_the_customer,
    ledger_outage_is_caught_up,
    refunds_partial_full_and_replayed,
    concurrent_refunds_never_exceed_the_capture,
    a_failed_processor_refund_gives_the_amount_back,
    payments_are_listed_newest_first_to_whom_they_belong,
);

#[tokio::test]
async fn migrate_and_audit_a_fresh_database() {
    let dir = platform::testkit::TempDir::new("payments-migrate").expect("temp dir");
    let vars = [("MERCATO_DATA_DIR".to_owned(), dir.path().display().to_string())];
    let settings = platform::Settings::from_vars(vars).expect("settings");
    payments::migrate(&settings).await.expect("migrate");
    payments::migrate(&settings).await.expect("migrate again");
    let db = Db::open(&settings, payments::NAME).await.expect("open");
    assert!(payments::audit(&db).await.expect("audit").is_empty());
    db.close().await;
}

#[tokio::test]
async fn run_needs_the_client_secret() {
    let dir = platform::testkit::TempDir::new("payments-run").expect("temp dir");
    let vars = [("MERCATO_DATA_DIR".to_owned(), dir.path().display().to_string())];
    let settings = platform::Settings::from_vars(vars).expect("settings");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let bus = Arc::new(platform::events::InProcessBus::new());
    let error = payments::run(listener.into(), settings, bus, CancellationToken::new()).await.expect_err("no secret");
    assert!(error.to_string().contains("MERCATO_PAYMENTS_CLIENT_SECRET"), "{error}");
}
