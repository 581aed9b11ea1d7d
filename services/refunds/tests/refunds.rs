//! Refunds over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL: each
//! scenario is an async fn taking a `Db`, run once per engine. The payments service is an in-memory stand-in
//! served with tonic on a port-0 listener (a service never depends on another service's crate): GetPayment,
//! and RefundPayment idempotent by refund id and never refunding more than captured; it counts calls and can
//! be switched to answer UNAVAILABLE or to refuse refunds. Every scenario that ends normally checks that
//! `refunds::audit` comes back clean.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::common::Money;
use api::mercato::payments::v1::payment_service_server::{PaymentService, PaymentServiceServer};
use api::mercato::payments::v1::{
    CreatePaymentRequest, CreatePaymentResponse, GetPaymentRequest, GetPaymentResponse, ListPaymentsRequest,
    ListPaymentsResponse, Payment, PaymentStatus, RefundPaymentRequest, RefundPaymentResponse,
};
use api::mercato::refunds::v1::refund_service_client::RefundServiceClient;
use api::mercato::refunds::v1::{
    CreateRefundRequest, GetRefundRequest, ListPaymentRefundsRequest, ListRefundsRequest, ListRefundsResponse, Refund,
    RefundCompleted, RefundFailed, RefundStatus,
};
use platform::db::Db;
use platform::events::{EventBus, EventEnvelope, InProcessBus};
use platform::testkit::TestIssuer;
use platform::testkit::error_reason as reason;
use prost::Message;
use refunds::{PaymentsClient, StaticToken};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

type Client = RefundServiceClient<Channel>;

const SERVICE_TOKEN: &str = "refunds-test-token";

// ---------------------------------------------------------------------------------------------------------
// The payments stand-in.

#[derive(Default)]
struct PaymentsState {
    payments: HashMap<String, Payment>,
    /// Refund id → (payment id, amount).
    applied: HashMap<String, (String, i64)>,
}

/// An in-memory payments service. `refunds_down` makes RefundPayment answer UNAVAILABLE, `all_down` every
/// call, `refuse` makes RefundPayment refuse with FAILED_PRECONDITION.
#[derive(Clone, Default)]
struct FakePayments {
    state: Arc<Mutex<PaymentsState>>,
    refunds_down: Arc<AtomicBool>,
    all_down: Arc<AtomicBool>,
    refuse: Arc<AtomicBool>,
    refund_calls: Arc<AtomicUsize>,
}

impl FakePayments {
    fn add(&self, amount_minor: i64, status: PaymentStatus) -> String {
        let id = uuid::Uuid::now_v7().to_string();
        let payment = Payment {
            id: id.clone(),
            order_id: format!("order-{id}"),
            customer_id: "cust-1".into(),
            amount: eur(amount_minor),
            refunded_amount: eur(0),
            status: status as i32,
            payment_method: "tok_visa".into(),
            ..Default::default()
        };
        self.state.lock().expect("lock").payments.insert(id.clone(), payment);
        id
    }

    fn refunded(&self, id: &str) -> i64 {
        let state = self.state.lock().expect("lock");
        state.payments[id].refunded_amount.as_ref().map_or(0, |m| m.amount_minor)
    }

    fn calls(&self) -> usize {
        self.refund_calls.load(Ordering::SeqCst)
    }

    fn check(
        &self,
        request_token: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    ) -> Result<(), Status> {
        if self.all_down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("payments is down (test)"));
        }
        if request_token.and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {SERVICE_TOKEN}")) {
            return Err(Status::unauthenticated("the refunds service's token is missing"));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl PaymentService for FakePayments {
    async fn create_payment(
        &self,
        _: Request<CreatePaymentRequest>,
    ) -> Result<Response<CreatePaymentResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }

    async fn get_payment(&self, request: Request<GetPaymentRequest>) -> Result<Response<GetPaymentResponse>, Status> {
        self.check(request.metadata().get("authorization"))?;
        let id = request.into_inner().id;
        let payment = self.state.lock().expect("lock").payments.get(&id).cloned();
        let payment = payment.ok_or_else(|| Status::not_found(format!("payment {id} not found")))?;
        Ok(Response::new(GetPaymentResponse { payment: Some(payment) }))
    }

    async fn list_payments(&self, _: Request<ListPaymentsRequest>) -> Result<Response<ListPaymentsResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }

    async fn refund_payment(
        &self,
        request: Request<RefundPaymentRequest>,
    ) -> Result<Response<RefundPaymentResponse>, Status> {
        self.check(request.metadata().get("authorization"))?;
        self.refund_calls.fetch_add(1, Ordering::SeqCst);
        // Widen the window in which concurrent refunds overlap.
        tokio::time::sleep(Duration::from_millis(5)).await;
        if self.refunds_down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the processor is unavailable (test)"));
        }
        let req = request.into_inner();
        assert!(req.refund_id.len() <= 50, "refund ids must fit the payments contract");
        let amount = req.amount.as_ref().map_or(0, |m| m.amount_minor);
        let mut state = self.state.lock().expect("lock");
        if let Some((payment_id, applied)) = state.applied.get(&req.refund_id).cloned() {
            if payment_id != req.payment_id || applied != amount {
                return Err(Status::invalid_argument("refund id reused"));
            }
            let payment = state.payments[&payment_id].clone();
            return Ok(Response::new(RefundPaymentResponse {
                payment: Some(payment),
                processor_reference: format!("re_{}", req.refund_id),
                refunded: eur(applied),
            }));
        }
        if self.refuse.load(Ordering::SeqCst) {
            return Err(Status::failed_precondition("the payment processor refused the refund: card expired"));
        }
        let payment = state
            .payments
            .get_mut(&req.payment_id)
            .ok_or_else(|| Status::not_found(format!("payment {} not found", req.payment_id)))?;
        let captured = payment.amount.as_ref().map_or(0, |m| m.amount_minor);
        let refunded = payment.refunded_amount.as_ref().map_or(0, |m| m.amount_minor);
        if req.amount.as_ref().map(|m| m.currency.as_str()) != Some("EUR") {
            return Err(Status::invalid_argument("wrong currency"));
        }
        if refunded + amount > captured {
            return Err(Status::failed_precondition("the refund exceeds what is left to refund"));
        }
        payment.refunded_amount = eur(refunded + amount);
        payment.status = if refunded + amount == captured {
            PaymentStatus::Refunded as i32
        } else {
            PaymentStatus::PartiallyRefunded as i32
        };
        let payment = payment.clone();
        state.applied.insert(req.refund_id.clone(), (req.payment_id.clone(), amount));
        Ok(Response::new(RefundPaymentResponse {
            payment: Some(payment),
            processor_reference: format!("re_{}", req.refund_id),
            refunded: eur(amount),
        }))
    }
}

// ---------------------------------------------------------------------------------------------------------
// The service under test.

struct Server {
    client: Client,
    issuer: Arc<TestIssuer>,
    payments: FakePayments,
    events: Arc<Mutex<Vec<EventEnvelope>>>,
    db: Db,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), refunds::Error>>,
    payments_stop: CancellationToken,
}

impl Server {
    async fn start(db: Db) -> Self {
        let payments = FakePayments::default();
        let payments_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind payments");
        let payments_url = format!("http://{}", payments_listener.local_addr().expect("addr"));
        let payments_stop = CancellationToken::new();
        let stopping = payments_stop.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PaymentServiceServer::new(payments.clone()))
                .serve_with_incoming_shutdown(TcpListenerStream::new(payments_listener), async move {
                    stopping.cancelled().await
                }),
        );
        let client = PaymentsClient::new(
            platform::grpc::channel(&payments_url).expect("payments channel"),
            Arc::new(StaticToken(SERVICE_TOKEN.into())),
        )
        .with_retry_interval(Duration::from_millis(100));

        let bus = Arc::new(InProcessBus::new());
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        bus.subscribe(
            "test",
            &["refund.completed", "refund.failed"],
            Arc::new(move |envelope: Arc<EventEnvelope>| {
                seen.lock().expect("lock").push((*envelope).clone());
                Box::pin(async { Ok(()) })
            }),
        );

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = Arc::new(TestIssuer::new().expect("issuer"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(refunds::serve(listener, db.clone(), issuer.verifier(), client, bus, shutdown.clone()));
        let url = format!("http://{addr}");
        let client = RefundServiceClient::new(platform::testkit::connect_when_up(&url, "refunds").await);
        Self { client, issuer, payments, events, db, shutdown, task, payments_stop }
    }

    /// Stops the server after checking that the books are consistent.
    async fn stop(self) {
        let problems = refunds::audit(&self.db).await.expect("audit");
        assert!(problems.is_empty(), "audit: {problems:#?}");
        self.shutdown.cancel();
        self.task.await.expect("join").expect("served cleanly");
        self.payments_stop.cancel();
    }

    fn admin(&self) -> String {
        self.issuer.token("admin-1", &["refund:write", "payment:write"], &["customer", "admin"])
    }

    fn customer(&self) -> String {
        self.issuer.token("cust-1", &["payment:write", "orders:write"], &["customer"])
    }

    fn service(&self) -> String {
        self.issuer.token("orders", &["payment:write", "payment:refund"], &["service"])
    }

    async fn create(&self, token: &str, request: CreateRefundRequest) -> Result<Refund, Status> {
        let response = self.client.clone().create_refund(with_token(request, token)).await?;
        Ok(response.into_inner().refund.expect("refund"))
    }

    async fn refund(&self, payment_id: &str, amount_minor: i64, key: &str) -> Result<Refund, Status> {
        self.create(&self.admin(), refund_request(payment_id, amount_minor, key)).await
    }

    async fn get(&self, token: &str, id: &str) -> Result<Refund, Status> {
        let response = self.client.clone().get_refund(with_token(GetRefundRequest { id: id.into() }, token)).await?;
        Ok(response.into_inner().refund.expect("refund"))
    }

    async fn list(
        &self,
        token: &str,
        payment_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<Refund>, String), Status> {
        let request =
            ListPaymentRefundsRequest { payment_id: payment_id.into(), page_size, page_token: page_token.into() };
        let response = self.client.clone().list_payment_refunds(with_token(request, token)).await?.into_inner();
        Ok((response.refunds, response.next_page_token))
    }

    /// Waits until the bus has seen `count` events, then returns them.
    async fn events(&self, count: usize) -> Vec<EventEnvelope> {
        for _ in 0..200 {
            let events = self.events.lock().expect("lock").clone();
            if events.len() >= count {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let events = self.events.lock().expect("lock").clone();
        panic!("expected {count} events, got {}: {events:?}", events.len());
    }

    async fn wait_status(&self, id: &str, status: RefundStatus) -> Refund {
        for _ in 0..200 {
            let refund = self.get(&self.admin(), id).await.expect("get");
            if refund.status == status as i32 {
                return refund;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("refund {id} never became {status:?}");
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

fn refund_request(payment_id: &str, amount_minor: i64, key: &str) -> CreateRefundRequest {
    CreateRefundRequest {
        payment_id: payment_id.into(),
        amount: eur(amount_minor),
        reason: "damaged in transit".into(),
        idempotency_key: key.into(),
    }
}

fn fields(status: &Status) -> Vec<String> {
    let details = platform::error::decode_details(status).expect("details");
    let bad = details.details.iter().find(|d| d.type_url.ends_with("google.rpc.BadRequest")).expect("BadRequest");
    let bad = api::google::rpc::BadRequest::decode(bad.value.as_slice()).expect("BadRequest");
    bad.field_violations.into_iter().map(|v| v.field).collect()
}

fn amount(refund: &Refund) -> i64 {
    refund.amount.as_ref().map_or(0, |m| m.amount_minor)
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios.

async fn partial_then_full_refunds_complete(db: Db) {
    let server = Server::start(db).await;
    let payment = server.payments.add(10_000, PaymentStatus::Captured);

    let first = server.refund(&payment, 4_000, "k-1").await.expect("partial refund");
    assert_eq!(first.status, RefundStatus::Completed as i32);
    assert_eq!((first.payment_id.as_str(), amount(&first)), (payment.as_str(), 4_000));
    assert!(first.id.len() <= 50 && first.failure_reason.is_empty());
    assert!(first.create_time.is_some() && first.update_time.is_some());
    assert_eq!(server.payments.refunded(&payment), 4_000);

    let second = server.refund(&payment, 6_000, "k-2").await.expect("the rest");
    assert_eq!(second.status, RefundStatus::Completed as i32);
    assert_eq!(server.payments.refunded(&payment), 10_000);

    // The payment is fully refunded now.
    let more = server.refund(&payment, 1, "k-3").await.expect_err("nothing left");
    assert_eq!(more.code(), Code::FailedPrecondition);
    assert_eq!(reason(&more), "PAYMENT_NOT_REFUNDABLE");
    assert_eq!(server.payments.calls(), 2);
    server.stop().await;
}

async fn over_refunds_are_refused_and_store_nothing(db: Db) {
    let server = Server::start(db).await;
    let payment = server.payments.add(10_000, PaymentStatus::Captured);

    let status = server.refund(&payment, 10_001, "k-1").await.expect_err("more than captured");
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "REFUND_EXCEEDS_CAPTURED"));
    server.refund(&payment, 7_000, "k-2").await.expect("within");
    let status = server.refund(&payment, 3_001, "k-3").await.expect_err("beyond the rest");
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "REFUND_EXCEEDS_CAPTURED"));
    assert!(status.message().contains("3000"), "{}", status.message());

    let (listed, _) = server.list(&server.admin(), &payment, 0, "").await.expect("list");
    assert_eq!(listed.len(), 1, "refused refunds are not stored");
    assert_eq!(server.payments.calls(), 1, "refused refunds never reach the payments service");
    // The key of a refused request is free for a corrected one.
    let retried = server.refund(&payment, 3_000, "k-3").await.expect("the rest");
    assert_eq!(retried.status, RefundStatus::Completed as i32);
    server.stop().await;
}

async fn concurrent_refunds_never_exceed_the_capture(db: Db) {
    let server = Arc::new(Server::start(db).await);
    let payment = server.payments.add(10_000, PaymentStatus::Captured);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let server = server.clone();
        let payment = payment.clone();
        tasks.push(tokio::spawn(async move { server.refund(&payment, 6_000, &format!("key-{i}")).await }));
    }
    let mut completed = 0;
    for task in tasks {
        match task.await.expect("join") {
            Ok(refund) => {
                assert_eq!(refund.status, RefundStatus::Completed as i32);
                completed += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(reason(&status), "REFUND_EXCEEDS_CAPTURED");
            }
        }
    }
    assert_eq!(completed, 1);
    assert_eq!(server.payments.refunded(&payment), 6_000);
    assert_eq!(server.payments.calls(), 1);
    let (listed, _) = server.list(&server.admin(), &payment, 0, "").await.expect("list");
    assert_eq!(listed.len(), 1);
    let Ok(server) = Arc::try_unwrap(server) else { panic!("server still shared") };
    server.stop().await;
}

async fn idempotency_keys_replay_or_refuse(db: Db) {
    let server = Server::start(db).await;
    let payment = server.payments.add(10_000, PaymentStatus::Captured);

    let first = server.refund(&payment, 2_500, "same-key").await.expect("first");
    let replay = server.refund(&payment, 2_500, "same-key").await.expect("replay");
    assert_eq!(replay, first);
    assert_eq!(server.payments.calls(), 1, "a replay asks the payments service nothing");

    // The header is the key when present, and wins over the field.
    let mut request = with_token(refund_request(&payment, 2_500, "ignored"), &server.admin());
    request.metadata_mut().insert("idempotency-key", "same-key".parse().expect("ascii"));
    let via_header = server.client.clone().create_refund(request).await.expect("header").into_inner().refund;
    assert_eq!(via_header.as_ref().map(|r| r.id.as_str()), Some(first.id.as_str()));

    let other_amount = server.refund(&payment, 2_600, "same-key").await.expect_err("other body");
    assert_eq!(
        (other_amount.code(), reason(&other_amount).as_str()),
        (Code::InvalidArgument, "IDEMPOTENCY_KEY_REUSED")
    );
    let mut other_reason = refund_request(&payment, 2_500, "same-key");
    other_reason.reason = "changed my mind".into();
    let status = server.create(&server.admin(), other_reason).await.expect_err("other reason");
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");

    let status = server.refund(&payment, 2_500, "").await.expect_err("no key");
    assert_eq!((status.code(), fields(&status)), (Code::InvalidArgument, vec!["idempotency_key".to_owned()]));
    let status = server.create(&server.admin(), CreateRefundRequest::default()).await.expect_err("empty");
    assert_eq!(fields(&status), ["payment_id", "amount", "idempotency_key"]);
    let status = server.refund(&payment, -5, "neg").await.expect_err("negative");
    assert_eq!(fields(&status), ["amount.amount_minor"]);

    // Keys are per caller: another admin's key of the same name is another refund.
    let other_admin = server.issuer.token("admin-2", &["refund:write"], &["admin"]);
    let theirs = server.create(&other_admin, refund_request(&payment, 2_500, "same-key")).await.expect("theirs");
    assert_ne!(theirs.id, first.id);
    assert_eq!(server.payments.refunded(&payment), 5_000);
    server.stop().await;
}

async fn unanswered_refunds_stay_pending_until_the_retry_completes_them(db: Db) {
    let server = Server::start(db).await;
    let payment = server.payments.add(10_000, PaymentStatus::Captured);
    server.payments.refunds_down.store(true, Ordering::SeqCst);

    let pending = server.refund(&payment, 4_000, "k-1").await.expect("accepted");
    assert_eq!(pending.status, RefundStatus::Pending as i32);
    // The reservation holds while it is pending: the rest is all that can be refunded meanwhile.
    let status = server.refund(&payment, 6_001, "k-2").await.expect_err("reserved");
    assert_eq!(reason(&status), "REFUND_EXCEEDS_CAPTURED");
    let replay = server.refund(&payment, 4_000, "k-1").await.expect("replay while down");
    assert_eq!((replay.id.as_str(), replay.status), (pending.id.as_str(), RefundStatus::Pending as i32));
    assert!(server.payments.calls() >= 2);

    server.payments.refunds_down.store(false, Ordering::SeqCst);
    let completed = server.wait_status(&pending.id, RefundStatus::Completed).await;
    assert_eq!(amount(&completed), 4_000);
    assert_eq!(server.payments.refunded(&payment), 4_000, "given back exactly once");
    let events = server.events(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].r#type, "refund.completed");
    let payload = RefundCompleted::decode(events[0].data.as_slice()).expect("payload");
    assert_eq!((payload.refund_id.as_str(), payload.payment_id.as_str()), (pending.id.as_str(), payment.as_str()));
    server.stop().await;
}

async fn payments_unreachable_at_creation_stores_nothing(db: Db) {
    let server = Server::start(db).await;
    let payment = server.payments.add(10_000, PaymentStatus::Captured);
    server.payments.all_down.store(true, Ordering::SeqCst);
    let status = server.refund(&payment, 1_000, "k-1").await.expect_err("payments down");
    assert_eq!(status.code(), Code::Unavailable);
    server.payments.all_down.store(false, Ordering::SeqCst);
    let (listed, _) = server.list(&server.admin(), &payment, 0, "").await.expect("list");
    assert!(listed.is_empty());
    let refund = server.refund(&payment, 1_000, "k-1").await.expect("once it is back");
    assert_eq!(refund.status, RefundStatus::Completed as i32);
    server.stop().await;
}

async fn refused_refunds_fail_and_free_their_amount(db: Db) {
    let server = Server::start(db).await;
    let payment = server.payments.add(10_000, PaymentStatus::Captured);
    server.payments.refuse.store(true, Ordering::SeqCst);

    let failed = server.refund(&payment, 10_000, "k-1").await.expect("answered");
    assert_eq!(failed.status, RefundStatus::Failed as i32);
    assert!(failed.failure_reason.contains("card expired"), "{}", failed.failure_reason);
    let events = server.events(1).await;
    assert_eq!(events[0].r#type, "refund.failed");
    let payload = RefundFailed::decode(events[0].data.as_slice()).expect("payload");
    assert_eq!(payload.refund_id, failed.id);
    assert!(payload.failure_reason.contains("card expired"));
    // A replay answers the failed refund as it is.
    assert_eq!(server.refund(&payment, 10_000, "k-1").await.expect("replay"), failed);

    server.payments.refuse.store(false, Ordering::SeqCst);
    let again = server.refund(&payment, 10_000, "k-2").await.expect("refundable again");
    assert_eq!(again.status, RefundStatus::Completed as i32);
    assert_eq!(server.payments.refunded(&payment), 10_000);
    let events = server.events(2).await;
    assert_eq!(events[1].r#type, "refund.completed");
    server.stop().await;
}

async fn payments_that_cannot_be_refunded_are_refused(db: Db) {
    let server = Server::start(db).await;
    let payment = server.payments.add(10_000, PaymentStatus::Captured);
    let mut request = refund_request(&payment, 1_000, "k-1");
    request.amount = Some(Money { currency: "USD".into(), amount_minor: 1_000 });
    let status = server.create(&server.admin(), request).await.expect_err("wrong currency");
    assert_eq!((status.code(), fields(&status)), (Code::InvalidArgument, vec!["amount.currency".to_owned()]));

    let status = server.refund("no-such-payment", 1_000, "k-2").await.expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);

    let declined = server.payments.add(10_000, PaymentStatus::Failed);
    let status = server.refund(&declined, 1_000, "k-3").await.expect_err("never captured");
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "PAYMENT_NOT_REFUNDABLE"));
    assert_eq!(server.payments.calls(), 0);
    server.stop().await;
}

async fn customers_see_only_the_refunds_of_their_own_payments(db: Db) {
    let server = Server::start(db).await;
    let payment = server.payments.add(10_000, PaymentStatus::Captured);
    let refund = server.refund(&payment, 1_000, "k-1").await.expect("refund");

    // The payment's customer reads its refunds but may not create one.
    let customer = server.customer();
    let status = server.create(&customer, refund_request(&payment, 1_000, "k-2")).await.expect_err("customer");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(server.get(&customer, &refund.id).await.expect("own refund"), refund);
    assert_eq!(server.list(&customer, &payment, 0, "").await.expect("own payment").0, vec![refund.clone()]);
    // Someone else's refunds and payments do not exist for another customer.
    let stranger = server.issuer.token("cust-2", &["payment:write", "orders:write"], &["customer"]);
    assert_eq!(server.get(&stranger, &refund.id).await.expect_err("stranger").code(), Code::NotFound);
    assert_eq!(server.list(&stranger, &payment, 0, "").await.expect_err("stranger").code(), Code::NotFound);
    assert_eq!(server.list(&stranger, "no-such-payment", 0, "").await.expect_err("unknown").code(), Code::NotFound);
    let status = server.client.clone().get_refund(GetRefundRequest { id: refund.id.clone() }).await.expect_err("anon");
    assert_eq!(status.code(), Code::Unauthenticated);

    let service = server.service();
    assert_eq!(server.get(&service, &refund.id).await.expect("service reads"), refund);
    assert_eq!(server.list(&service, &payment, 0, "").await.expect("service lists").0, vec![refund.clone()]);
    assert_eq!(server.get(&server.admin(), "missing").await.expect_err("unknown").code(), Code::NotFound);
    server.stop().await;
}

async fn refunds_are_listed_by_payment_page_by_page(db: Db) {
    let server = Server::start(db).await;
    let payment = server.payments.add(10_000, PaymentStatus::Captured);
    let other = server.payments.add(10_000, PaymentStatus::Captured);
    let mut made = Vec::new();
    for i in 0..3 {
        made.push(server.refund(&payment, 1_000 + i, &format!("k-{i}")).await.expect("refund").id);
    }
    server.refund(&other, 500, "other").await.expect("other payment");

    let admin = server.admin();
    let (page, token) = server.list(&admin, &payment, 2, "").await.expect("page 1");
    assert_eq!(page.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), made[..2]);
    assert!(!token.is_empty());
    let (page, token) = server.list(&admin, &payment, 2, &token).await.expect("page 2");
    assert_eq!(page.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), made[2..]);
    assert!(token.is_empty());
    let (none, _) = server.list(&admin, "no-such-payment", 0, "").await.expect("unknown payment");
    assert!(none.is_empty());
    let status = server.list(&admin, &payment, -1, "").await.expect_err("negative page size");
    assert_eq!(fields(&status), ["page_size"]);

    // Every completed refund was published, about its payment.
    let events = server.events(4).await;
    assert!(events.iter().all(|e| e.r#type == "refund.completed" && e.source == "refunds"));
    assert_eq!(events.iter().filter(|e| e.subject == payment).count(), 3);
    server.stop().await;
}

async fn the_audit_reports_inconsistent_totals_and_stuck_refunds(db: Db) {
    let server = Server::start(db).await;
    let payment = server.payments.add(10_000, PaymentStatus::Captured);
    server.refund(&payment, 1_000, "k-1").await.expect("refund");
    assert!(refunds::audit(&server.db).await.expect("audit").is_empty());

    platform::with_db!(&server.db, pool => {
        sqlx::query("UPDATE payment_refund_totals SET refunded_minor = 20000").execute(pool).await.expect("corrupt");
        sqlx::query("UPDATE refunds SET status = 'PENDING', lease_until = 9223372036854775807, create_time = 0")
            .execute(pool)
            .await
            .expect("stuck");
    });
    let problems = refunds::audit(&server.db).await.expect("audit");
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("20000 refunded of 10000 captured"));
    assert!(problems[1].contains("sum to 1000"));
    assert!(problems[2].contains("pending for more than 15 minutes"));
    server.shutdown.cancel();
    server.task.await.expect("join").expect("served cleanly");
    server.payments_stop.cancel();
}

/// Staff who give money back list every refund, newest first, a page at a time, or only those in one state
/// (the failed ones someone has to look at, the pending ones); nobody else lists them.
async fn every_refund_is_listed_to_finance_newest_first_by_state(db: Db) {
    let server = Server::start(db).await;
    let (first, second) =
        (server.payments.add(10_000, PaymentStatus::Captured), server.payments.add(10_000, PaymentStatus::Captured));
    let completed = server.refund(&first, 1_000, "k-1").await.expect("refunds");
    server.payments.refuse.store(true, Ordering::SeqCst);
    let failed = server.refund(&first, 2_000, "k-2").await.expect("answered");
    server.payments.refuse.store(false, Ordering::SeqCst);
    server.payments.refunds_down.store(true, Ordering::SeqCst);
    let pending = server.refund(&second, 500, "k-3").await.expect("accepted");
    let states = [completed.status, failed.status, pending.status];
    let expected = [RefundStatus::Completed, RefundStatus::Failed, RefundStatus::Pending].map(|s| s as i32);
    assert_eq!(states, expected);

    let list = |token: String, request: ListRefundsRequest| {
        let mut client = server.client.clone();
        async move { client.list_refunds(with_token(request, &token)).await.map(|r| r.into_inner()) }
    };
    let ids = |page: &ListRefundsResponse| page.refunds.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    let everything = list(server.admin(), ListRefundsRequest::default()).await.expect("lists");
    assert_eq!(ids(&everything), [pending.id.as_str(), &failed.id, &completed.id], "newest first");
    assert_eq!(everything.refunds[1], failed, "as GetRefund shows it");
    assert!(everything.next_page_token.is_empty());

    // A page at a time: none repeated or skipped.
    let mut walked = Vec::new();
    let mut request = ListRefundsRequest { page_size: 1, ..Default::default() };
    for _ in 0..10 {
        let page = list(server.admin(), request.clone()).await.expect("a page");
        assert!(page.refunds.len() <= 1);
        walked.extend(ids(&page));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert_eq!(walked, ids(&everything));

    for (state, refund) in
        [(RefundStatus::Failed, &failed), (RefundStatus::Pending, &pending), (RefundStatus::Completed, &completed)]
    {
        let only = list(server.admin(), ListRefundsRequest { status: state as i32, ..Default::default() }).await;
        assert_eq!(ids(&only.expect("lists")), [refund.id.as_str()], "{state:?}");
    }

    // A period: from the failed refund (inclusive) to the pending one (exclusive); then from the failed one on.
    let made = |r: &Refund| r.create_time;
    let between = ListRefundsRequest { start_time: made(&failed), end_time: made(&pending), ..Default::default() };
    assert_eq!(ids(&list(server.admin(), between).await.expect("lists")), [failed.id.as_str()]);
    let since = ListRefundsRequest { start_time: made(&failed), ..Default::default() };
    assert_eq!(ids(&list(server.admin(), since).await.expect("lists")), [pending.id.as_str(), &failed.id]);
    let until = ListRefundsRequest { end_time: made(&failed), ..Default::default() };
    assert_eq!(ids(&list(server.admin(), until).await.expect("lists")), [completed.id.as_str()]);

    // Customers, and services without the scope, may not; bad requests name every bad field.
    for token in [server.customer(), server.service()] {
        let denied = list(token, ListRefundsRequest::default()).await.expect_err("no refund:write");
        assert_eq!(denied.code(), Code::PermissionDenied);
    }
    let bad = ListRefundsRequest {
        page_size: -1,
        page_token: "not a token!".into(),
        status: 99,
        start_time: made(&pending),
        end_time: made(&failed),
    };
    let invalid = list(server.admin(), bad).await.expect_err("bad");
    assert_eq!(fields(&invalid), ["page_size", "page_token", "status", "end_time"]);
    let anonymous = server.client.clone().list_refunds(ListRefundsRequest::default()).await;
    assert_eq!(anonymous.expect_err("no token").code(), Code::Unauthenticated);

    // The pending one completes once the payments service answers again (and the audit finds nothing stuck).
    server.payments.refunds_down.store(false, Ordering::SeqCst);
    server.wait_status(&pending.id, RefundStatus::Completed).await;
    server.stop().await;
}

macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let (db, _dir) = platform::testkit::sqlite("refunds").await.expect("sqlite");
                    super::$scenario(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let Some(db) = platform::testkit::postgres("refunds").await else { return };
                    super::$scenario(db).await;
                }
            )*
        }
    };
}

on_both_engines!(
    partial_then_full_refunds_complete,
    over_refunds_are_refused_and_store_nothing,
    concurrent_refunds_never_exceed_the_capture,
    idempotency_keys_replay_or_refuse,
    unanswered_refunds_stay_pending_until_the_retry_completes_them,
    payments_unreachable_at_creation_stores_nothing,
    refused_refunds_fail_and_free_their_amount,
    payments_that_cannot_be_refunded_are_refused,
    customers_see_only_the_refunds_of_their_own_payments,
    refunds_are_listed_by_payment_page_by_page,
    the_audit_reports_inconsistent_totals_and_stuck_refunds,
    every_refund_is_listed_to_finance_newest_first_by_state,
);

#[tokio::test]
async fn run_needs_the_client_secret() {
    let settings = platform::Settings::from_vars(Vec::new()).expect("settings");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::new());
    let error = refunds::run(listener.into(), settings, bus, CancellationToken::new()).await.expect_err("no secret");
    assert!(error.to_string().contains("MERCATO_REFUNDS_CLIENT_SECRET"), "{error}");
}
