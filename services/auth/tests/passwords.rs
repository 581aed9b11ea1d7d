//! Changing a password, resetting a forgotten one and deleting an account, over real gRPC, on SQLite and (when
//! `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL.

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::Duration;

use api::auth::{
    ChangePasswordRequest, ConfirmPasswordResetRequest, CreateApiKeyRequest, DeleteAccountRequest, DisableUserRequest,
    EnableUserRequest, ExchangeApiKeyRequest, PasswordChangeMethod, PasswordChanged, PasswordResetRequested,
    RequestEmailChangeRequest, RequestPasswordResetRequest, UserDeleted,
};
use platform::events::{EventBus, EventEnvelope, InProcessBus};
use platform::{Db, with_db};
use prost::Message;
use tokio::sync::mpsc::UnboundedReceiver;
use tonic::Code;

use support::*;

/// The service with a bus whose `user.password_*` events the test receives.
async fn start_listening(db: Db) -> (Running, UnboundedReceiver<EventEnvelope>) {
    let bus = Arc::new(InProcessBus::new());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<EventEnvelope>();
    bus.subscribe(
        "test",
        &[auth::events::PASSWORD_RESET_REQUESTED, auth::events::PASSWORD_CHANGED, auth::events::USER_DELETED],
        Arc::new(move |envelope| {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.send((*envelope).clone());
                Ok(())
            })
        }),
    );
    (start_with_bus(db, bus as Arc<dyn EventBus>).await, rx)
}

async fn next_event(rx: &mut UnboundedReceiver<EventEnvelope>) -> EventEnvelope {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("an event in time").expect("event")
}

async fn count(db: &Db, sql: &str, value: &str) -> i64 {
    with_db!(db, pool => {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).bind(value).fetch_one(pool).await.expect("count")
    })
}

fn change(current: &str, new: &str, token: &str) -> tonic::Request<ChangePasswordRequest> {
    bearer(ChangePasswordRequest { current_password: current.to_owned(), new_password: new.to_owned() }, token)
}

fn confirm(token: &str, new: &str) -> ConfirmPasswordResetRequest {
    ConfirmPasswordResetRequest { token: token.to_owned(), new_password: new.to_owned() }
}

fn ask(email: &str) -> RequestPasswordResetRequest {
    RequestPasswordResetRequest { email: email.to_owned() }
}

// --- scenarios ---------------------------------------------------------------------------------------------

async fn changing_the_password_signs_out_other_sessions(db: Db) {
    let (running, mut events) = start_listening(db.clone()).await;
    let mut client = running.client.clone();
    let user = register(&mut client, "carol@example.com", "first password", "Carol").await.expect("registers");
    let here = login(&mut client, "carol@example.com", "first password").await.expect("logs in");
    let elsewhere = login(&mut client, "carol@example.com", "first password").await.expect("logs in again");

    // Refused, naming the field, and nothing changes.
    let wrong = client.change_password(change("not it", "second password", &here.access_token)).await;
    assert_eq!(violated_fields(&wrong.expect_err("wrong current password")), ["current_password"]);
    let same = client.change_password(change("first password", "first password", &here.access_token)).await;
    assert_eq!(violated_fields(&same.expect_err("the same password")), ["new_password"]);
    let short = client.change_password(change("first password", "short", &here.access_token)).await;
    assert_eq!(violated_fields(&short.expect_err("too short")), ["new_password"]);
    let anonymous = client.change_password(tonic::Request::new(ChangePasswordRequest::default())).await;
    assert_eq!(anonymous.expect_err("needs a token").code(), Code::Unauthenticated);
    refresh(&mut client, &elsewhere.refresh_token).await.expect("every refusal left the sessions alone");
    let elsewhere = login(&mut client, "carol@example.com", "first password").await.expect("still the password");

    let changed = client
        .change_password(change("first password", "second password", &here.access_token))
        .await
        .expect("changes")
        .into_inner();
    assert_eq!((changed.token_type.as_str(), changed.expires_in), ("Bearer", 900));
    // Every earlier session is signed out; the new pair works.
    for old in [&here.refresh_token, &elsewhere.refresh_token] {
        assert_eq!(refresh(&mut client, old).await.expect_err("signed out").code(), Code::Unauthenticated);
    }
    refresh(&mut client, &changed.refresh_token).await.expect("the caller's new session");
    let old = login(&mut client, "carol@example.com", "first password").await.expect_err("old password");
    assert_eq!(old.code(), Code::Unauthenticated);
    login(&mut client, "carol@example.com", "second password").await.expect("new password");

    // The owner is told.
    let event = next_event(&mut events).await;
    assert_eq!((event.r#type.as_str(), event.subject.as_str()), ("user.password_changed", user.id.as_str()));
    let payload = PasswordChanged::decode(event.data.as_slice()).expect("payload");
    assert_eq!((payload.email.as_str(), payload.method()), ("carol@example.com", PasswordChangeMethod::Change));
    let told = count(&db, "SELECT COUNT(*) FROM outbox WHERE event_type = $1", "user.password_changed").await;
    assert_eq!(told, 1, "only the change that happened is told");
    running.stop().await;
}

async fn a_forgotten_password_is_reset_by_mail(db: Db) {
    let (running, mut events) = start_listening(db.clone()).await;
    let mut client = running.client.clone();
    let user = register(&mut client, "dave@example.com", "forgotten password", "Dave").await.expect("registers");
    let session = login(&mut client, "dave@example.com", "forgotten password").await.expect("logs in");

    // An address without an account is answered the same, and nothing is mailed.
    client.request_password_reset(ask("nobody@example.com")).await.expect("same answer");
    let bad = client.request_password_reset(ask("not an address")).await.expect_err("not an address");
    assert_eq!(violated_fields(&bad), ["email"]);
    let asked_at = platform::time::now_micros();
    client.request_password_reset(ask(" Dave@Example.com ")).await.expect("asks");
    let event = next_event(&mut events).await;
    assert_eq!((event.r#type.as_str(), event.subject.as_str()), ("user.password_reset_requested", user.id.as_str()));
    let mailed = PasswordResetRequested::decode(event.data.as_slice()).expect("payload");
    assert_eq!((mailed.email.as_str(), mailed.display_name.as_str()), ("dave@example.com", "Dave"));
    assert_eq!(mailed.token.len(), 43, "32 random bytes, base64url");
    let expires = mailed.expire_time.expect("expiry");
    let hour = expires.seconds * 1_000_000 - asked_at;
    assert!((3_590_000_000..=3_610_000_000).contains(&hour), "valid for an hour, not {hour} µs");
    let stored = count(&db, "SELECT COUNT(*) FROM password_resets WHERE token_hash = $1", &mailed.token).await;
    assert_eq!(stored, 0, "the token is stored hashed, never as it is");
    // Asking again at once mails nothing more.
    client.request_password_reset(ask("dave@example.com")).await.expect("same answer");
    let mails = count(&db, "SELECT COUNT(*) FROM outbox WHERE event_type = $1", "user.password_reset_requested").await;
    assert_eq!(mails, 1, "one mail, not one per request");

    let unknown = client.confirm_password_reset(confirm("not-a-token", "brand new password")).await;
    assert_eq!(reason(&unknown.expect_err("unknown token")), "TOKEN_NOT_FOUND");
    let short = client.confirm_password_reset(confirm(&mailed.token, "short")).await.expect_err("too short");
    assert_eq!(violated_fields(&short), ["new_password"]);
    client.confirm_password_reset(confirm(&mailed.token, "brand new password")).await.expect("resets");
    let again = client.confirm_password_reset(confirm(&mailed.token, "another password")).await;
    assert_eq!(reason(&again.expect_err("single use")), "TOKEN_USED");
    assert_eq!(
        refresh(&mut client, &session.refresh_token).await.expect_err("signed out").code(),
        Code::Unauthenticated
    );
    login(&mut client, "dave@example.com", "brand new password").await.expect("the new password");
    let changed = next_event(&mut events).await;
    assert_eq!(changed.r#type, "user.password_changed");
    let payload = PasswordChanged::decode(changed.data.as_slice()).expect("payload");
    assert_eq!(payload.method(), PasswordChangeMethod::Reset);

    // Later, a token past its hour is refused as expired.
    execute(&db, "UPDATE password_resets SET create_time = 0 WHERE user_id = $1", &user.id).await;
    client.request_password_reset(ask("dave@example.com")).await.expect("asks again");
    let second = PasswordResetRequested::decode(next_event(&mut events).await.data.as_slice()).expect("payload");
    assert_ne!(second.token, mailed.token);
    execute(&db, "UPDATE password_resets SET expires_at = 1 WHERE user_id = $1 AND used_at IS NULL", &user.id).await;
    let late = client.confirm_password_reset(confirm(&second.token, "late password")).await.expect_err("expired");
    assert_eq!((late.code(), reason(&late)), (Code::FailedPrecondition, "TOKEN_EXPIRED".to_owned()));
    login(&mut client, "dave@example.com", "brand new password").await.expect("unchanged");
    running.stop().await;
}

async fn a_reset_token_sets_one_password_however_often_it_is_sent(db: Db) {
    let (running, mut events) = start_listening(db.clone()).await;
    let mut client = running.client.clone();
    register(&mut client, "erin@example.com", "forgotten password", "Erin").await.expect("registers");
    // Ten requests at once mail one token.
    let mut asks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let mut client = client.clone();
        asks.spawn(async move { client.request_password_reset(ask("erin@example.com")).await });
    }
    for answer in asks.join_all().await {
        answer.expect("each is answered");
    }
    let mails = count(&db, "SELECT COUNT(*) FROM outbox WHERE event_type = $1", "user.password_reset_requested").await;
    assert_eq!(mails, 1, "concurrent requests take turns");
    let mailed = PasswordResetRequested::decode(next_event(&mut events).await.data.as_slice()).expect("payload");

    // Two confirmations at once: one sets its password, the other is told the token was used.
    let mut confirms = tokio::task::JoinSet::new();
    for password in ["password of the first", "password of the second"] {
        let mut client = client.clone();
        let request = confirm(&mailed.token, password);
        confirms.spawn(async move { (password, client.confirm_password_reset(request).await) });
    }
    let answers = confirms.join_all().await;
    let winners: Vec<&str> = answers.iter().filter(|(_, a)| a.is_ok()).map(|(p, _)| *p).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    for (_, answer) in &answers {
        if let Err(status) = answer {
            assert_eq!(reason(status), "TOKEN_USED");
        }
    }
    login(&mut client, "erin@example.com", winners[0]).await.expect("the winner's password");
    running.stop().await;
}

async fn a_disabled_account_gets_no_new_password(db: Db) {
    let (running, mut events) = start_listening(db.clone()).await;
    let mut client = running.client.clone();
    let user = register(&mut client, "fay@example.com", "old password", "Fay").await.expect("registers");
    client.request_password_reset(ask("fay@example.com")).await.expect("asks");
    let mailed = PasswordResetRequested::decode(next_event(&mut events).await.data.as_slice()).expect("payload");
    let admin = login(&mut client, ADMIN_EMAIL, ADMIN_PASSWORD).await.expect("the admin signs in").access_token;
    client.disable_user(bearer(DisableUserRequest { id: user.id.clone() }, &admin)).await.expect("disables");

    // The token mailed before is refused, saying why; asking again (past the resend pause) mails nothing.
    let refused = client.confirm_password_reset(confirm(&mailed.token, "new password")).await.expect_err("disabled");
    assert_eq!((refused.code(), reason(&refused)), (Code::PermissionDenied, "ACCOUNT_DISABLED".to_owned()));
    execute(&db, "UPDATE password_resets SET create_time = 0 WHERE user_id = $1", &user.id).await;
    client.request_password_reset(ask("fay@example.com")).await.expect("the same answer as ever");
    let mails = count(&db, "SELECT COUNT(*) FROM outbox WHERE event_type = $1", "user.password_reset_requested").await;
    assert_eq!(mails, 1, "no token for a disabled account");

    // Enabled again, the account's password is the old one, and the unspent token still works.
    client.enable_user(bearer(EnableUserRequest { id: user.id.clone() }, &admin)).await.expect("enables");
    login(&mut client, "fay@example.com", "old password").await.expect("the refused reset changed nothing");
    client.confirm_password_reset(confirm(&mailed.token, "new password")).await.expect("resets");
    login(&mut client, "fay@example.com", "new password").await.expect("the new password");
    running.stop().await;
}

async fn an_account_is_deleted_once_its_password_is_confirmed(db: Db) {
    let (running, mut events) = start_listening(db.clone()).await;
    let mut client = running.client.clone();
    let user = register(&mut client, "gone@example.com", "leaving password", "Gwen").await.expect("registers");
    let session = login(&mut client, "gone@example.com", "leaving password").await.expect("logs in");
    let key = CreateApiKeyRequest { name: "script".into(), scopes: vec!["cart:write".into()], ttl_days: 0 };
    let key = client.create_api_key(bearer(key, &session.access_token)).await.expect("a key").into_inner().secret;
    let delete = |password: &str| bearer(DeleteAccountRequest { password: password.into() }, &session.access_token);
    let moving =
        RequestEmailChangeRequest { new_email: "elsewhere@example.com".into(), password: "leaving password".into() };
    client.request_email_change(bearer(moving, &session.access_token)).await.expect("a pending change");

    let wrong = client.delete_account(delete("not it")).await.expect_err("wrong password");
    assert_eq!(violated_fields(&wrong), ["password"]);
    let empty = client.delete_account(delete("")).await.expect_err("no password");
    assert_eq!(violated_fields(&empty), ["password"]);
    login(&mut client, "gone@example.com", "leaving password").await.expect("still there");

    client.delete_account(delete("leaving password")).await.expect("deleted");
    let event = next_event(&mut events).await;
    assert_eq!((event.r#type.as_str(), event.subject.as_str()), ("user.deleted", user.id.as_str()));
    let payload = UserDeleted::decode(event.data.as_slice()).expect("payload");
    assert_eq!((payload.email.as_str(), payload.display_name.as_str()), ("gone@example.com", "Gwen"));
    // Nothing of it works or stays.
    let login_again = login(&mut client, "gone@example.com", "leaving password").await.expect_err("gone");
    assert_eq!(login_again.code(), Code::Unauthenticated);
    let refreshed = refresh(&mut client, &session.refresh_token).await.expect_err("sessions gone");
    assert_eq!(refreshed.code(), Code::Unauthenticated);
    let exchanged = client.exchange_api_key(ExchangeApiKeyRequest { api_key: key }).await.expect_err("keys gone");
    assert_eq!(exchanged.code(), Code::Unauthenticated);
    for table in ["refresh_tokens", "api_keys", "email_verifications", "email_changes", "users"] {
        let column = if table == "users" { "id" } else { "user_id" };
        let left = count(&db, &format!("SELECT COUNT(*) FROM {table} WHERE {column} = $1"), &user.id).await;
        assert_eq!(left, 0, "{table}");
    }
    let again = client.delete_account(delete("leaving password")).await.expect_err("twice");
    assert_eq!(again.code(), Code::NotFound);
    // The address is free for a new account.
    let new = register(&mut client, "gone@example.com", "another password", "Gwen").await.expect("registers anew");
    assert_ne!(new.id, user.id);
    running.stop().await;
}

on_both_backends!(
    changing_the_password_signs_out_other_sessions,
    a_forgotten_password_is_reset_by_mail,
    a_reset_token_sets_one_password_however_often_it_is_sent,
    a_disabled_account_gets_no_new_password,
    an_account_is_deleted_once_its_password_is_confirmed,
);
