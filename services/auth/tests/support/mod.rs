//! The harness of the auth service's tests: the service on a port-0 listener, and calls a test makes often.
// Each test file uses the part it needs.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use api::auth::auth_service_client::AuthServiceClient;
use api::auth::{GetJwksRequest, LoginRequest, LoginResponse, RefreshRequest, RegisterRequest, User};
use platform::auth::{StaticKeySource, TokenVerifier};
use platform::events::{EventBus, InProcessBus};
use platform::grpc::Channel;
#[allow(unused_imports)]
pub use platform::testkit::error_reason as reason;
use platform::{Db, Settings, with_db};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};

pub const ADMIN_EMAIL: &str = "Root@Example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

pub type Client = AuthServiceClient<Channel>;

/// One running instance of the service.
pub struct Running {
    pub client: Client,
    pub client_channel: Channel,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), auth::Error>>,
}

impl Running {
    pub async fn stop(self) {
        drop(self.client);
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.handle).await.expect("stops in time");
        result.expect("task").expect("served without error");
    }
}

pub const PAYMENTS_SECRET: &str = "payments-secret-of-at-least-32-characters";

pub fn settings() -> Settings {
    Settings::from_vars(vec![
        ("MERCATO_ADMIN_EMAIL".to_owned(), ADMIN_EMAIL.to_owned()),
        ("MERCATO_ADMIN_PASSWORD".to_owned(), ADMIN_PASSWORD.to_owned()),
        ("MERCATO_PAYMENTS_CLIENT_SECRET".to_owned(), PAYMENTS_SECRET.to_owned()),
    ])
    .expect("settings")
}

pub async fn start(db: Db) -> Running {
    start_with_bus(db, Arc::new(InProcessBus::new())).await
}

pub async fn start_with_bus(db: Db, bus: Arc<dyn EventBus>) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let handle = tokio::spawn(async move { auth::serve(listener, db, &settings(), bus, token).await });
    let url = format!("http://{addr}");
    for _ in 0..100 {
        assert!(!handle.is_finished(), "the service stopped while starting");
        let channel = platform::grpc::channel(&url).expect("url");
        let mut client = AuthServiceClient::new(channel.clone());
        // The listener accepts before the service has migrated; wait until it answers.
        if client.get_jwks(GetJwksRequest {}).await.is_ok() {
            return Running { client, client_channel: channel, shutdown, handle };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the auth service did not come up at {url}");
}

/// The fields a status's BadRequest detail names, in order.
pub fn violated_fields(status: &Status) -> Vec<String> {
    use prost::Message;
    let details = platform::error::decode_details(status).expect("details");
    let any = details.details.iter().find(|d| d.type_url.ends_with("google.rpc.BadRequest")).expect("BadRequest");
    let bad = api::google::rpc::BadRequest::decode(any.value.as_slice()).expect("decodes");
    bad.field_violations.into_iter().map(|v| v.field).collect()
}

pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header value"));
    request
}

pub async fn register(client: &mut Client, email: &str, password: &str, name: &str) -> Result<User, Status> {
    let request = RegisterRequest {
        email: email.to_owned(),
        password: password.to_owned(),
        display_name: name.to_owned(),
        locale: String::new(),
    };
    Ok(client.register(request).await?.into_inner().user.expect("user"))
}

pub async fn login(client: &mut Client, email: &str, password: &str) -> Result<LoginResponse, Status> {
    let request = LoginRequest { email: email.to_owned(), password: password.to_owned() };
    Ok(client.login(request).await?.into_inner())
}

pub async fn refresh(client: &mut Client, token: &str) -> Result<String, Status> {
    let response = client.refresh(RefreshRequest { refresh_token: token.to_owned() }).await?.into_inner();
    assert_eq!((response.token_type.as_str(), response.expires_in), ("Bearer", 900));
    Ok(response.refresh_token)
}

pub async fn verifier(client: &mut Client) -> TokenVerifier {
    let keys = client.get_jwks(GetJwksRequest {}).await.expect("jwks").into_inner().keys;
    TokenVerifier::new(Arc::new(StaticKeySource(keys)))
}

/// The payloads of the `event_type` events the service wrote to its outbox, oldest first.
pub async fn outbox<M: prost::Message + Default>(db: &Db, event_type: &str) -> Vec<M> {
    use base64::Engine;
    let payloads: Vec<String> = with_db!(db, pool => {
        sqlx::query_scalar("SELECT payload FROM outbox WHERE event_type = $1 ORDER BY create_time, id")
            .bind(event_type)
            .fetch_all(pool)
            .await
            .expect("outbox")
    });
    let decode = |payload: &String| base64::engine::general_purpose::STANDARD.decode(payload).expect("base64");
    payloads.iter().map(|payload| M::decode(decode(payload).as_slice()).expect("payload")).collect()
}

pub async fn execute(db: &Db, sql: &str, value: &str) {
    with_db!(db, pool => {
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(value).execute(pool).await.expect("sql");
    });
}

/// Runs a scenario on SQLite and on PostgreSQL.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let (db, _dir) = platform::testkit::sqlite(auth::NAME).await.expect("sqlite");
                super::$scenario(db).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = platform::testkit::postgres(auth::NAME).await else { return };
                super::$scenario(db).await;
            }
        }
    )*};
}
