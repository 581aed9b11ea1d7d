//! The users service over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL: each
//! scenario is an async fn taking a `Db`, run once per engine. `user.registered` arrives on an in-process bus
//! as auth publishes it.

use std::sync::Arc;

use api::mercato::auth::v1::{EmailChanged, UserDeleted, UserRegistered};
use api::mercato::orders::v1::Address;
use api::mercato::users::v1::user_service_client::UserServiceClient;
use api::mercato::users::v1::{
    CreateAddressRequest, DeleteAddressRequest, GetAddressRequest, GetProfileRequest, ListAddressesRequest, Profile,
    SavedAddress, UpdateAddressRequest, UpdateProfileRequest,
};
use platform::db::Db;
use platform::events::{EventBus, EventEnvelope, InProcessBus};
use platform::testkit::TestIssuer;
use platform::testkit::violated_fields as bad_fields;
use prost::Message;
use prost_types::FieldMask;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

struct Server {
    client: UserServiceClient<Channel>,
    bus: Arc<InProcessBus>,
    issuer: Arc<TestIssuer>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), users::Error>>,
}

impl Server {
    async fn start(db: Db) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = Arc::new(TestIssuer::new().expect("issuer"));
        let shutdown = CancellationToken::new();
        let bus = Arc::new(InProcessBus::new());
        db.migrate(&users::MIGRATOR, users::NAME).await.expect("migrate");
        users::events::subscribe(bus.as_ref(), users::store::Store::new(db.clone()));
        let task = tokio::spawn(users::serve(listener, db, issuer.verifier(), shutdown.clone()));
        let url = format!("http://{addr}");
        let client = UserServiceClient::new(platform::testkit::connect_when_up(&url, "users").await);
        Self { client, bus, issuer, shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("served cleanly");
    }

    fn customer(&self, id: &str) -> String {
        self.issuer.token(id, &["cart:write", "orders:read", "orders:write"], &["customer"])
    }

    fn admin(&self) -> String {
        self.issuer.token("admin-1", &["users:admin"], &["admin"])
    }

    /// Delivers `user.registered` (event id `event_id`) as auth publishes it.
    async fn registered(&self, event_id: &str, user_id: &str, email: &str, name: &str, locale: &str) {
        let payload = UserRegistered {
            user_id: user_id.into(),
            email: email.into(),
            display_name: name.into(),
            locale: locale.into(),
        };
        self.deliver(event_id, "user.registered", user_id, payload.encode_to_vec()).await;
    }

    /// Delivers `user.email_changed` (event id `event_id`) as auth publishes it.
    async fn email_changed(&self, event_id: &str, user_id: &str, email: &str, previous_email: &str) {
        let payload = EmailChanged {
            user_id: user_id.into(),
            email: email.into(),
            previous_email: previous_email.into(),
            ..EmailChanged::default()
        };
        self.deliver(event_id, "user.email_changed", user_id, payload.encode_to_vec()).await;
    }

    /// Delivers `user.deleted` (event id `event_id`) as auth publishes it.
    async fn deleted(&self, event_id: &str, user_id: &str) {
        let payload = UserDeleted { user_id: user_id.into(), ..UserDeleted::default() };
        self.deliver(event_id, "user.deleted", user_id, payload.encode_to_vec()).await;
    }

    async fn deliver(&self, event_id: &str, event_type: &str, user_id: &str, data: Vec<u8>) {
        let envelope = EventEnvelope {
            id: event_id.into(),
            source: "auth".into(),
            r#type: event_type.into(),
            subject: user_id.into(),
            time: Some(platform::time::timestamp(platform::time::now_micros())),
            data_content_type: "application/protobuf".into(),
            data,
            traceparent: String::new(),
        };
        self.bus.publish(envelope).await.expect("the users service took the event");
    }

    async fn profile(&self, token: &str, user_id: &str) -> Result<Profile, Status> {
        let request = with_token(GetProfileRequest { user_id: user_id.into() }, token);
        Ok(self.client.clone().get_profile(request).await?.into_inner().profile.expect("a profile"))
    }

    async fn update_profile(&self, token: &str, profile: Profile, paths: &[&str]) -> Result<Profile, Status> {
        let request = UpdateProfileRequest { profile: Some(profile), update_mask: Some(mask(paths)) };
        let answer = self.client.clone().update_profile(with_token(request, token)).await?.into_inner();
        Ok(answer.profile.expect("a profile"))
    }

    async fn addresses(&self, token: &str) -> Vec<SavedAddress> {
        let request = with_token(ListAddressesRequest {}, token);
        self.client.clone().list_addresses(request).await.expect("list").into_inner().addresses
    }

    async fn save(&self, token: &str, label: &str, city: &str, is_default: bool) -> Result<SavedAddress, Status> {
        let address =
            SavedAddress { label: label.into(), address: Some(address(city)), is_default, ..Default::default() };
        let request = with_token(CreateAddressRequest { address: Some(address) }, token);
        Ok(self.client.clone().create_address(request).await?.into_inner().address.expect("an address"))
    }

    async fn update_address(
        &self,
        token: &str,
        id: &str,
        address: SavedAddress,
        paths: &[&str],
    ) -> Result<SavedAddress, Status> {
        let request = UpdateAddressRequest { id: id.into(), address: Some(address), update_mask: Some(mask(paths)) };
        let answer = self.client.clone().update_address(with_token(request, token)).await?.into_inner();
        Ok(answer.address.expect("an address"))
    }

    async fn delete(&self, token: &str, id: &str) -> Result<(), Status> {
        let request = with_token(DeleteAddressRequest { id: id.into() }, token);
        self.client.clone().delete_address(request).await?;
        Ok(())
    }
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    request
}

fn mask(paths: &[&str]) -> FieldMask {
    FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }
}

fn address(city: &str) -> Address {
    Address {
        name: "Ada Lovelace".into(),
        line1: "1 Main St".into(),
        city: city.into(),
        postal_code: "12345".into(),
        country: "gb".into(),
        ..Address::default()
    }
}

/// (label, city, is_default) of each address, in the listed order.
fn book(addresses: &[SavedAddress]) -> Vec<(String, String, bool)> {
    addresses
        .iter()
        .map(|a| (a.label.clone(), a.address.as_ref().map(|x| x.city.clone()).unwrap_or_default(), a.is_default))
        .collect()
}

fn entry(label: &str, city: &str, is_default: bool) -> (String, String, bool) {
    (label.into(), city.into(), is_default)
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios.

async fn registration_makes_the_profile_and_the_customer_keeps_it(db: Db) {
    let server = Server::start(db).await;
    let ada = server.customer("u-ada");
    let before = server.profile(&ada, "").await.expect("own profile before the registration arrived");
    assert_eq!(before, Profile { user_id: "u-ada".into(), ..Profile::default() });

    server.registered("ev-1", "u-ada", "ada@example.com", "Ada", "en-GB").await;
    let profile = server.profile(&ada, "").await.expect("profile");
    assert_eq!(
        (profile.email.as_str(), profile.display_name.as_str(), profile.locale.as_str(), profile.phone.as_str()),
        ("ada@example.com", "Ada", "en-GB", "")
    );

    let change = Profile {
        display_name: "Ada L.".into(),
        phone: "+44 20 7946 0958".into(),
        locale: "fr".into(),
        ..Profile::default()
    };
    let updated = server.update_profile(&ada, change, &["display_name", "phone"]).await.expect("update");
    assert_eq!(
        (updated.display_name.as_str(), updated.phone.as_str(), updated.locale.as_str(), updated.email.as_str()),
        ("Ada L.", "+442079460958", "en-GB", "ada@example.com"),
        "only the named fields change"
    );
    // A redelivered registration changes nothing the customer set.
    server.registered("ev-1", "u-ada", "ada@example.com", "Ada", "en-GB").await;
    assert_eq!(server.profile(&ada, "").await.expect("profile"), updated);

    // A customer who changed their profile before their registration arrived keeps their change.
    let bob = server.customer("u-bob");
    let early = Profile { display_name: "Bobby".into(), ..Profile::default() };
    server.update_profile(&bob, early, &["display_name"]).await.expect("early update");
    server.registered("ev-2", "u-bob", "bob@example.com", "Bob", "de").await;
    let bobs = server.profile(&bob, "").await.expect("profile");
    assert_eq!(
        (bobs.display_name.as_str(), bobs.email.as_str(), bobs.locale.as_str()),
        ("Bobby", "bob@example.com", "de")
    );

    let hidden = server.profile(&ada, "u-bob").await.expect_err("another customer's profile");
    assert_eq!(hidden.code(), Code::NotFound);
    let seen = server.profile(&server.admin(), "u-bob").await.expect("admins read any profile");
    assert_eq!(seen.display_name, "Bobby");
    server.stop().await;
}

async fn bad_profile_changes_name_their_fields_and_change_nothing(db: Db) {
    let server = Server::start(db).await;
    server.registered("ev-1", "u-ada", "ada@example.com", "Ada", "en").await;
    let ada = server.customer("u-ada");
    let bad = Profile {
        display_name: " ".into(),
        phone: "0171 1234567".into(),
        locale: "english".into(),
        ..Profile::default()
    };
    let refused = server.update_profile(&ada, bad, &["display_name", "phone", "locale"]).await.expect_err("bad");
    assert_eq!(bad_fields(&refused), ["profile.display_name", "profile.phone", "profile.locale"]);
    let email = server.update_profile(&ada, Profile::default(), &["email"]).await.expect_err("email is auth's");
    assert_eq!(bad_fields(&email), ["update_mask"]);
    let profile = server.profile(&ada, "").await.expect("profile");
    assert_eq!((profile.display_name.as_str(), profile.locale.as_str()), ("Ada", "en"));
    server.stop().await;
}

async fn an_address_book_has_one_default_and_is_private(db: Db) {
    let server = Server::start(db).await;
    let ada = server.customer("u-ada");
    let home = server.save(&ada, "Home", "London", false).await.expect("first");
    assert!(home.is_default, "the first address is the default");
    assert_eq!(home.address.as_ref().map(|a| a.country.as_str()), Some("GB"), "checked like checkout's");
    let work = server.save(&ada, "Work", "Leeds", false).await.expect("second");
    let parents = server.save(&ada, "Parents", "York", true).await.expect("third, as default");
    assert_eq!(
        book(&server.addresses(&ada).await),
        [entry("Parents", "York", true), entry("Work", "Leeds", false), entry("Home", "London", false)],
        "the default first, then the newest"
    );

    let made_default = SavedAddress { is_default: true, ..SavedAddress::default() };
    server.update_address(&ada, &work.id, made_default, &["is_default"]).await.expect("make default");
    let relabelled = SavedAddress { label: "Office".into(), ..SavedAddress::default() };
    let office = server.update_address(&ada, &work.id, relabelled, &["label"]).await.expect("relabel");
    assert_eq!((office.label.as_str(), office.is_default), ("Office", true));
    assert_eq!(
        book(&server.addresses(&ada).await),
        [entry("Office", "Leeds", true), entry("Parents", "York", false), entry("Home", "London", false)]
    );

    let get = |token: &str, id: &str| {
        let request = with_token(GetAddressRequest { id: id.into() }, token);
        let mut client = server.client.clone();
        async move { Ok::<_, Status>(client.get_address(request).await?.into_inner().address) }
    };
    assert_eq!(get(&ada, &work.id).await.expect("one"), Some(office.clone()));

    let bob = server.customer("u-bob");
    assert!(server.addresses(&bob).await.is_empty());
    assert_eq!(get(&bob, &work.id).await.expect_err("not bob's").code(), Code::NotFound);
    let theirs = server.delete(&bob, &home.id).await.expect_err("another customer's address");
    assert_eq!(theirs.code(), Code::NotFound);
    let change = SavedAddress { label: "Mine".into(), ..SavedAddress::default() };
    let theirs = server.update_address(&bob, &home.id, change, &["label"]).await.expect_err("not bob's");
    assert_eq!(theirs.code(), Code::NotFound);

    server.delete(&ada, &parents.id).await.expect("delete");
    assert_eq!(server.delete(&ada, &parents.id).await.expect_err("gone").code(), Code::NotFound);
    assert_eq!(server.addresses(&ada).await.len(), 2);
    server.stop().await;
}

async fn the_profile_follows_the_accounts_new_address(db: Db) {
    let server = Server::start(db).await;
    let ada = server.customer("u-ada");
    server.registered("ev-1", "u-ada", "ada@example.com", "Ada", "en").await;
    let before = server.profile(&ada, "").await.expect("profile");
    server.email_changed("ev-2", "u-ada", "ada@example.org", "ada@example.com").await;
    let after = server.profile(&ada, "").await.expect("profile");
    assert_eq!(after.email, "ada@example.org");
    assert_eq!((after.display_name.as_str(), after.locale.as_str()), ("Ada", "en"), "the rest stays");
    let when = |p: &Profile| p.update_time.map(|t| (t.seconds, t.nanos));
    assert!(when(&after) > when(&before), "{after:?}");
    // A redelivered registration does not bring the old address back.
    server.registered("ev-1", "u-ada", "ada@example.com", "Ada", "en").await;
    assert_eq!(server.profile(&ada, "").await.expect("profile").email, "ada@example.org");

    // The change arriving before the registration (a registration's delivery failed and came back later): the
    // registration fills in the rest and leaves the newer address.
    let bob = server.customer("u-bob");
    server.email_changed("ev-3", "u-bob", "bob@example.org", "bob@example.com").await;
    server.registered("ev-4", "u-bob", "bob@example.com", "Bob", "de").await;
    let bobs = server.profile(&bob, "").await.expect("profile");
    assert_eq!(
        (bobs.email.as_str(), bobs.display_name.as_str(), bobs.locale.as_str()),
        ("bob@example.org", "Bob", "de")
    );
    server.stop().await;
}

async fn a_deleted_account_leaves_no_profile_or_address(db: Db) {
    let server = Server::start(db).await;
    let (ada, bob) = (server.customer("u-ada"), server.customer("u-bob"));
    server.registered("ev-1", "u-ada", "ada@example.com", "Ada", "en").await;
    server.registered("ev-2", "u-bob", "bob@example.com", "Bob", "en").await;
    server.save(&ada, "Home", "London", true).await.expect("saved");
    server.save(&bob, "Home", "Leeds", true).await.expect("saved");

    server.deleted("ev-3", "u-ada").await;
    assert!(server.addresses(&ada).await.is_empty(), "the address book is erased");
    let gone = server.profile(&server.admin(), "u-ada").await.expect_err("nothing of it is kept");
    assert_eq!(gone.code(), Code::NotFound);
    // A redelivery changes nothing, and other customers keep theirs.
    server.deleted("ev-3", "u-ada").await;
    assert_eq!(server.addresses(&bob).await.len(), 1);
    assert_eq!(server.profile(&bob, "").await.expect("profile").email, "bob@example.com");
    server.stop().await;
}

async fn an_address_book_is_bounded_and_checked(db: Db) {
    let server = Server::start(db).await;
    let ada = server.customer("u-ada");
    // Concurrent saves: the limit and the single default hold.
    let saves = (0..24).map(|n| {
        let server = &server;
        let ada = &ada;
        async move { server.save(ada, &format!("#{n}"), "Bath", n % 3 == 0).await }
    });
    let outcomes = futures::future::join_all(saves).await;
    let saved = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(saved, 20, "an address book holds 20");
    for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    }
    let addresses = server.addresses(&ada).await;
    assert_eq!(addresses.len(), 20);
    assert_eq!(addresses.iter().filter(|a| a.is_default).count(), 1, "one default");

    let broken = SavedAddress {
        label: "x".repeat(51),
        address: Some(Address { postal_code: String::new(), country: "GBR".into(), ..address("Bath") }),
        ..SavedAddress::default()
    };
    let bob = server.customer("u-bob");
    let request = with_token(CreateAddressRequest { address: Some(broken) }, &bob);
    let refused = server.client.clone().create_address(request).await.expect_err("bad address");
    assert_eq!(bad_fields(&refused), ["address.label", "address.address.postal_code", "address.address.country"]);
    assert!(server.addresses(&bob).await.is_empty(), "a refused save saves nothing");
    server.stop().await;
}

/// Runs each scenario once on SQLite and once on PostgreSQL.
macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (db, _dir) = platform::testkit::sqlite("users").await.expect("sqlite");
                    super::$scenario(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(db) = platform::testkit::postgres("users").await else { return };
                    super::$scenario(db).await;
                }
            )*
        }
    };
}

on_both_engines!(
    registration_makes_the_profile_and_the_customer_keeps_it,
    bad_profile_changes_name_their_fields_and_change_nothing,
    the_profile_follows_the_accounts_new_address,
    an_address_book_has_one_default_and_is_private,
    an_address_book_is_bounded_and_checked,
    a_deleted_account_leaves_no_profile_or_address,
);
