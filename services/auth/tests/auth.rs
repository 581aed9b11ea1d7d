//! The auth service over real gRPC on a port-0 listener, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is
//! set) PostgreSQL.

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::Duration;

use api::auth::{GetJwksRequest, GetMeRequest, LogoutRequest, RefreshRequest};
use api::google::rpc::BadRequest;
use platform::auth::Claims;
use platform::events::{EventBus, EventEnvelope, InProcessBus};
use platform::{Db, with_db};
use prost::Message;
use tonic::Code;

use support::*;

// --- scenarios ---------------------------------------------------------------------------------------------

async fn register_login_and_me(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();

    let user = register(&mut client, "  Alice@Example.COM ", "correct horse", " Alice ").await.expect("registers");
    assert_eq!(user.email, "alice@example.com");
    assert_eq!(user.display_name, "Alice");
    assert_eq!(user.roles, ["customer"]);
    assert!(uuid::Uuid::parse_str(&user.id).is_ok());
    assert!(user.create_time.is_some());

    let tokens = login(&mut client, "ALICE@example.com ", "correct horse").await.expect("logs in");
    assert_eq!((tokens.token_type.as_str(), tokens.expires_in), ("Bearer", 900));
    assert!(!tokens.refresh_token.is_empty());
    let me = client.get_me(bearer(GetMeRequest {}, &tokens.access_token)).await.expect("me").into_inner().user;
    assert_eq!(me.as_ref(), Some(&user));

    let duplicate = register(&mut client, "alice@EXAMPLE.com", "another password", "Alice 2").await;
    assert_eq!(duplicate.expect_err("duplicate").code(), Code::AlreadyExists);

    let invalid = register(&mut client, "not-an-email", "short", "   ").await.expect_err("invalid");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let details = platform::error::decode_details(&invalid).expect("details");
    let bad_request = details
        .details
        .iter()
        .find(|d| d.type_url == "type.googleapis.com/google.rpc.BadRequest")
        .map(|d| BadRequest::decode(d.value.as_slice()).expect("decodes"))
        .expect("a BadRequest detail");
    let fields: Vec<&str> = bad_request.field_violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["email", "password", "display_name"]);

    let anonymous = client.get_me(GetMeRequest {}).await.expect_err("needs a token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let garbage = client.get_me(bearer(GetMeRequest {}, "not.a.token")).await.expect_err("bad token");
    assert_eq!(garbage.code(), Code::Unauthenticated);

    // A valid token whose account is gone.
    execute(&db, "DELETE FROM users WHERE id = $1", &user.id).await;
    let gone = client.get_me(bearer(GetMeRequest {}, &tokens.access_token)).await.expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    let refreshed = refresh(&mut client, &tokens.refresh_token).await.expect_err("tokens went with the account");
    assert_eq!(refreshed.code(), Code::Unauthenticated);

    running.stop().await;
}

async fn login_failures_look_the_same(db: Db) {
    let running = start(db).await;
    let mut client = running.client.clone();
    register(&mut client, "bob@example.com", "bobs password", "Bob").await.expect("registers");

    let wrong_password = login(&mut client, "bob@example.com", "not bobs password").await.expect_err("wrong");
    let unknown_email = login(&mut client, "nobody@example.com", "bobs password").await.expect_err("unknown");
    let too_long = login(&mut client, "bob@example.com", &"x".repeat(10_000)).await.expect_err("too long");
    for status in [&wrong_password, &unknown_email, &too_long] {
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "invalid email or password");
    }
    assert_eq!(wrong_password.details(), unknown_email.details());
    login(&mut client, "bob@example.com", "bobs password").await.expect("the right password works");

    running.stop().await;
}

async fn access_tokens_verify_against_jwks(db: Db) {
    let running = start(db).await;
    let mut client = running.client.clone();
    let user = register(&mut client, "carol@example.com", "carols password", "Carol").await.expect("registers");
    let tokens = login(&mut client, "carol@example.com", "carols password").await.expect("logs in");

    let jwks = client.get_jwks(GetJwksRequest {}).await.expect("jwks").into_inner().keys;
    assert!(!jwks.is_empty());
    for jwk in &jwks {
        assert_eq!(
            (jwk.kty.as_str(), jwk.crv.as_str(), jwk.alg.as_str(), jwk.r#use.as_str()),
            ("OKP", "Ed25519", "EdDSA", "sig")
        );
    }
    let header = jsonwebtoken::decode_header(&tokens.access_token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let kid = header.kid.expect("kid");
    assert!(jwks.iter().any(|k| k.kid == kid), "the token's kid is published");

    let claims: Claims = verifier(&mut client).await.verify(&tokens.access_token).await.expect("verifies");
    assert_eq!(claims.iss, platform::auth::ISSUER);
    assert_eq!(claims.aud, platform::auth::AUDIENCE);
    assert_eq!(claims.sub, user.id);
    assert_eq!(claims.exp - claims.iat, 900);
    assert_eq!(claims.nbf, claims.iat);
    assert!((claims.iat - platform::time::now_secs()).abs() < 60);
    assert_eq!(claims.roles, ["customer"]);
    assert_eq!(
        claims.scope,
        "cart:write orders:read orders:write payment:write notifications:read reviews:write alerts:write"
    );
    assert!(!claims.has_scope("catalog:write"));

    let other = login(&mut client, "carol@example.com", "carols password").await.expect("logs in again");
    let other_claims = verifier(&mut client).await.verify(&other.access_token).await.expect("verifies");
    assert_ne!(claims.jti, other_claims.jti);

    running.stop().await;
}

async fn refresh_rotation_and_reuse(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    let user = register(&mut client, "dave@example.com", "daves password", "Dave").await.expect("registers");

    // A -> B; presenting A again is a reuse: the family dies, B with it.
    let a = login(&mut client, "dave@example.com", "daves password").await.expect("logs in").refresh_token;
    let b = refresh(&mut client, &a).await.expect("A is live");
    assert_ne!(a, b);
    let reused = refresh(&mut client, &a).await.expect_err("A is spent");
    assert_eq!(reused.code(), Code::Unauthenticated);
    let b_after = refresh(&mut client, &b).await.expect_err("B was revoked with its family");
    assert_eq!(b_after.code(), Code::Unauthenticated);

    // Other logins are other families.
    let c = login(&mut client, "dave@example.com", "daves password").await.expect("a fresh login").refresh_token;
    let d = refresh(&mut client, &c).await.expect("C is live");
    let unrelated = login(&mut client, "dave@example.com", "daves password").await.expect("another").refresh_token;

    // The access token from a refresh carries the roles the user has now.
    execute(&db, "UPDATE users SET roles = 'customer admin' WHERE id = $1", &user.id).await;
    let response = client.refresh(RefreshRequest { refresh_token: d.clone() }).await.expect("D is live").into_inner();
    let claims = verifier(&mut client).await.verify(&response.access_token).await.expect("verifies");
    assert_eq!(claims.sub, user.id);
    assert!(claims.has_scope("catalog:write"), "scopes follow the current roles: {}", claims.scope);
    let e = response.refresh_token;

    // Logout revokes the family, is idempotent, and says nothing about unknown tokens.
    client.logout(LogoutRequest { refresh_token: e.clone() }).await.expect("logs out");
    assert_eq!(refresh(&mut client, &e).await.expect_err("logged out").code(), Code::Unauthenticated);
    client.logout(LogoutRequest { refresh_token: e.clone() }).await.expect("again");
    client.logout(LogoutRequest { refresh_token: "never issued".into() }).await.expect("unknown");
    client.logout(LogoutRequest { refresh_token: String::new() }).await.expect("empty");
    for bogus in ["", "never issued"] {
        assert_eq!(refresh(&mut client, bogus).await.expect_err("bogus").code(), Code::Unauthenticated);
    }
    let unrelated_next = refresh(&mut client, &unrelated).await.expect("other families live on");

    // Expired tokens are refused.
    execute(&db, "UPDATE refresh_tokens SET expires_at = 0 WHERE family_id IS NOT NULL AND user_id = $1", &user.id)
        .await;
    assert_eq!(refresh(&mut client, &unrelated_next).await.expect_err("expired").code(), Code::Unauthenticated);

    // Concurrent presentations of one token: exactly one wins, and every other is refused, none failing (forty:
    // enough for the losers to have deadlocked among themselves on PostgreSQL when each signed out the session in
    // the transaction of its spend, which had locked the token's row).
    let live = login(&mut client, "dave@example.com", "daves password").await.expect("still works").refresh_token;
    let attempts: Vec<_> = (0..40)
        .map(|_| {
            let mut client = client.clone();
            let live = live.clone();
            tokio::spawn(async move { refresh(&mut client, &live).await })
        })
        .collect();
    let mut wins = 0;
    for attempt in attempts {
        match attempt.await.expect("task") {
            Ok(_) => wins += 1,
            Err(status) => assert_eq!(status.code(), Code::Unauthenticated),
        }
    }
    assert_eq!(wins, 1);

    login(&mut client, "dave@example.com", "daves password").await.expect("a fresh login still works");
    running.stop().await;
}

/// Refresh tokens are deleted a week after they expired, when the service starts (and hourly after); a token
/// that expired lately is kept (a replay of it, spent, would still revoke its family), and so are live ones.
async fn refresh_tokens_expired_over_a_week_ago_are_deleted(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    register(&mut client, "erin@example.com", "erins password", "Erin").await.expect("registers");
    let spent = login(&mut client, "erin@example.com", "erins password").await.expect("logs in").refresh_token;
    let lately_expired = refresh(&mut client, &spent).await.expect("rotates");
    let live = login(&mut client, "erin@example.com", "erins password").await.expect("again").refresh_token;
    drop(client);
    running.stop().await;

    // The spent token of the first family expired eight days ago, its successor one day ago.
    let day = 24 * 3600 * 1_000_000_i64;
    let now = platform::time::now_micros();
    with_db!(&db, pool => {
        let first_family: String = sqlx::query_scalar("SELECT family_id FROM refresh_tokens WHERE used_at IS NOT NULL")
            .fetch_one(pool).await.expect("the spent token");
        sqlx::query("UPDATE refresh_tokens SET expires_at = CASE WHEN used_at IS NULL THEN $1 ELSE $2 END WHERE family_id = $3")
            .bind(now - day).bind(now - 8 * day).bind(&first_family)
            .execute(pool).await.expect("aged");
    });

    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    let mut spent_rows = i64::MAX;
    for _ in 0..100 {
        spent_rows = with_db!(&db, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM refresh_tokens WHERE used_at IS NOT NULL").fetch_one(pool).await.expect("count")
        });
        if spent_rows == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(spent_rows, 0, "the token expired over a week ago is deleted");
    let left: i64 = with_db!(&db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM refresh_tokens").fetch_one(pool).await.expect("count")
    });
    assert_eq!(left, 2, "the lately expired token and the live one are kept");
    // The one expired lately is refused; the live one still rotates.
    assert_eq!(refresh(&mut client, &lately_expired).await.expect_err("expired").code(), Code::Unauthenticated);
    refresh(&mut client, &live).await.expect("the live token rotates");
    drop(client);
    running.stop().await;
}

async fn admin_and_key_survive_restarts(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    let tokens = login(&mut client, "root@example.com", ADMIN_PASSWORD).await.expect("the admin logs in");
    let me = client.get_me(bearer(GetMeRequest {}, &tokens.access_token)).await.expect("me").into_inner();
    let admin = me.user.expect("user");
    assert_eq!(admin.email, "root@example.com");
    assert_eq!(admin.roles, ["customer", "admin"]);
    let claims = verifier(&mut client).await.verify(&tokens.access_token).await.expect("verifies");
    assert!(claims.roles.iter().any(|r| r == "admin"), "{:?}", claims.roles);
    assert!(claims.has_scope("catalog:write") && claims.has_scope("cart:write"));
    let kids: Vec<String> =
        client.get_jwks(GetJwksRequest {}).await.expect("jwks").into_inner().keys.into_iter().map(|k| k.kid).collect();
    assert_eq!(kids.len(), 1);
    running.stop().await;

    let again = start(db.clone()).await;
    let mut client = again.client.clone();
    let kids_again: Vec<String> =
        client.get_jwks(GetJwksRequest {}).await.expect("jwks").into_inner().keys.into_iter().map(|k| k.kid).collect();
    assert_eq!(kids_again, kids, "the signing key is reused");
    // Tokens from before the restart still verify, and refresh tokens still work.
    client.get_me(bearer(GetMeRequest {}, &tokens.access_token)).await.expect("old token still good");
    refresh(&mut client, &tokens.refresh_token).await.expect("old refresh token still good");
    let admins = with_db!(&db, pool => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users WHERE email = $1")
            .bind("root@example.com")
            .fetch_one(pool)
            .await
            .expect("count")
    });
    assert_eq!(admins, 1, "the admin is not duplicated");
    again.stop().await;
}

async fn passwords_are_argon2id(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    let user = register(&mut client, "erin@example.com", "erins password", "Erin").await.expect("registers");
    let hash = with_db!(&db, pool => {
        sqlx::query_scalar::<_, String>("SELECT password_hash FROM users WHERE id = $1")
            .bind(&user.id)
            .fetch_one(pool)
            .await
            .expect("hash")
    });
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
    assert!(!hash.contains("erins password"));
    running.stop().await;
}

async fn registration_publishes_user_registered(db: Db) {
    let bus = Arc::new(InProcessBus::new());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<EventEnvelope>();
    // A consumer that fails its first delivery: the event must come again, not be lost.
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(1));
    bus.subscribe(
        "test",
        &[auth::events::USER_REGISTERED],
        Arc::new(move |envelope| {
            let (tx, failures) = (tx.clone(), failures.clone());
            Box::pin(async move {
                if failures
                    .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| {
                        n.checked_sub(1)
                    })
                    .is_ok()
                {
                    return Err("not yet".to_owned());
                }
                let _ = tx.send((*envelope).clone());
                Ok(())
            })
        }),
    );
    let mut running = start_with_bus(db.clone(), bus).await;
    let user = register(&mut running.client, "events@example.com", "password-1", "Eve").await.expect("registered");
    // The administrator created at start was registered too: its event comes first.
    let admin = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("in time").expect("event");
    let admin_payload = api::auth::UserRegistered::decode(admin.data.as_slice()).expect("payload");
    assert_eq!(admin_payload.email, ADMIN_EMAIL.to_lowercase());
    let envelope =
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("delivered in time").expect("event");
    assert_eq!(
        (envelope.r#type.as_str(), envelope.source.as_str(), envelope.subject.as_str()),
        ("user.registered", "auth", user.id.as_str())
    );
    let payload = api::auth::UserRegistered::decode(envelope.data.as_slice()).expect("payload");
    assert_eq!((payload.email.as_str(), payload.display_name.as_str()), ("events@example.com", "Eve"));
    // A refused duplicate registers nothing and publishes nothing.
    assert_eq!(
        register(&mut running.client, "events@example.com", "password-1", "Eve").await.expect_err("dup").code(),
        Code::AlreadyExists
    );
    let rows: Vec<String> = with_db!(&db, pool => {
        sqlx::query_scalar("SELECT event_type FROM outbox ORDER BY create_time, id").fetch_all(pool).await.expect("rows")
    });
    assert_eq!(
        rows,
        ["user.registered", "user.registered", "user.email_verification_requested"],
        "the administrator, then Eve with the code that verifies her address"
    );
    for _ in 0..100 {
        if platform::events::unsent_count(&db).await.expect("count") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(platform::events::unsent_count(&db).await.expect("count"), 0, "the relay marks delivered events sent");
    running.stop().await;
}

async fn services_get_tokens_with_their_own_scopes(db: Db) {
    let mut running = start(db).await;
    let verifier = verifier(&mut running.client).await;
    let channel = running.client_channel.clone();
    let tokens = platform::auth::ServiceTokens::new("payments", PAYMENTS_SECRET, channel.clone());
    let token = tokens.token().await.expect("issued");
    let claims = verifier.verify(&token).await.expect("valid");
    assert_eq!((claims.sub.as_str(), claims.roles.as_slice()), ("service:payments", &["service".to_owned()][..]));
    assert!(claims.has_scope("ledger:write") && !claims.has_scope("catalog:write"));
    assert!(claims.exp - claims.iat <= 300);
    assert_eq!(tokens.token().await.expect("cached"), token, "a valid token is reused, not reissued");

    for (client, secret) in
        [("payments", "wrong-secret-wrong-secret-wrong-secret"), ("orders", PAYMENTS_SECRET), ("", "")]
    {
        let refused =
            platform::auth::ServiceTokens::new(client, secret, channel.clone()).token().await.expect_err("refused");
        assert_eq!(refused.code(), Code::Unauthenticated, "{client}");
    }
    running.stop().await;
}

async fn api_keys_grant_their_scopes_until_revoked(db: Db) {
    use api::auth::{CreateApiKeyRequest, ExchangeApiKeyRequest, ListApiKeysRequest, RevokeApiKeyRequest};
    let mut running = start(db).await;
    let verifier = verifier(&mut running.client).await;
    let admin = login(&mut running.client, ADMIN_EMAIL, ADMIN_PASSWORD).await.expect("admin").access_token;
    let create = |scopes: &[&str]| CreateApiKeyRequest {
        name: "warehouse sync".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ttl_days: 0,
    };
    let created = running.client.create_api_key(bearer(create(&["inventory:write"]), &admin)).await.expect("created");
    let created = created.into_inner();
    let key = created.api_key.expect("key");
    assert!(created.secret.starts_with("mk_") && created.secret.starts_with(&key.prefix));
    assert_eq!(key.scopes, ["inventory:write"]);

    // The key exchanges for a token of its owner with only the key's scopes.
    let exchange = |secret: &str| ExchangeApiKeyRequest { api_key: secret.to_owned() };
    let token = running.client.exchange_api_key(exchange(&created.secret)).await.expect("exchanged").into_inner();
    let claims = verifier.verify(&token.access_token).await.expect("valid");
    assert_eq!(claims.scope, "inventory:write");
    assert!(claims.email_verified, "the owner's (the first administrator's) address is verified");
    assert!(token.expires_in <= 60);

    // Keys never hold more than their owner; listing shows no secret; revoked keys stop working.
    let customer = register(&mut running.client, "keys@example.com", "password-1", "K").await.expect("customer");
    let customer_token =
        login(&mut running.client, "keys@example.com", "password-1").await.expect("login").access_token;
    let refused = running.client.create_api_key(bearer(create(&["catalog:write"]), &customer_token)).await;
    assert_eq!(refused.expect_err("scope not held").code(), Code::InvalidArgument);
    let listed = running.client.list_api_keys(bearer(ListApiKeysRequest {}, &admin)).await.expect("list").into_inner();
    assert_eq!(listed.api_keys.len(), 1);
    let not_yours =
        running.client.revoke_api_key(bearer(RevokeApiKeyRequest { id: key.id.clone() }, &customer_token)).await;
    assert_eq!(not_yours.expect_err("someone else's").code(), Code::NotFound, "{}", customer.id);
    let revoked = running.client.revoke_api_key(bearer(RevokeApiKeyRequest { id: key.id.clone() }, &admin)).await;
    assert!(revoked.expect("revoked").into_inner().api_key.expect("key").revoked);
    let after = running.client.exchange_api_key(exchange(&created.secret)).await.expect_err("revoked key");
    assert_eq!(after.code(), Code::Unauthenticated);
    let unknown = running.client.exchange_api_key(exchange("mk_nope")).await.expect_err("unknown key");
    assert_eq!(unknown.code(), Code::Unauthenticated);
    running.stop().await;
}

on_both_backends!(
    register_login_and_me,
    login_failures_look_the_same,
    access_tokens_verify_against_jwks,
    refresh_rotation_and_reuse,
    refresh_tokens_expired_over_a_week_ago_are_deleted,
    admin_and_key_survive_restarts,
    passwords_are_argon2id,
    registration_publishes_user_registered,
    services_get_tokens_with_their_own_scopes,
    api_keys_grant_their_scopes_until_revoked,
);
