//! Verifying an account's address with a code mailed to it, over real gRPC, on SQLite and (when
//! `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL.

#[macro_use]
mod support;

use api::auth::{
    ConfirmEmailVerificationRequest, EmailVerificationRequested, EmailVerified, GetMeRequest, RefreshRequest,
    RequestEmailVerificationRequest, User,
};
use platform::Db;
use tonic::Code;

use support::*;

/// The codes mailed so far (the payloads of `user.email_verification_requested`), oldest first.
async fn mailed(db: &Db) -> Vec<EmailVerificationRequested> {
    outbox(db, "user.email_verification_requested").await
}

async fn me(client: &mut Client, token: &str) -> User {
    client.get_me(bearer(GetMeRequest {}, token)).await.expect("me").into_inner().user.expect("user")
}

async fn confirm(client: &mut Client, token: &str) -> Result<User, tonic::Status> {
    let request = ConfirmEmailVerificationRequest { token: token.to_owned() };
    Ok(client.confirm_email_verification(request).await?.into_inner().user.expect("user"))
}

async fn ask_again(client: &mut Client, token: &str) -> Result<i64, tonic::Status> {
    let response = client.request_email_verification(bearer(RequestEmailVerificationRequest {}, token)).await?;
    Ok(response.into_inner().expire_time.expect("expire time").seconds)
}

// --- scenarios ---------------------------------------------------------------------------------------------

async fn registering_mails_a_code_that_verifies_the_address(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    let registered = register(&mut client, "Dana@Example.com", "dana's password", "Dana").await.expect("registers");
    assert!(!registered.email_verified && registered.email_verify_time.is_none(), "{registered:?}");
    let codes = mailed(&db).await;
    assert_eq!(codes.len(), 1, "registering mails one code");
    let code = &codes[0];
    assert_eq!((code.user_id.as_str(), code.email.as_str()), (registered.id.as_str(), "dana@example.com"));
    assert_eq!(code.display_name, "Dana");
    let valid_for = code.expire_time.as_ref().expect("expiry").seconds - platform::time::now_secs();
    assert!((23 * 3600..=24 * 3600).contains(&valid_for), "a day: {valid_for} s");
    let signed_in = login(&mut client, "dana@example.com", "dana's password").await.expect("signs in");
    let session = signed_in.access_token;
    assert!(!me(&mut client, &session).await.email_verified, "not before the code is used");
    let tokens = verifier(&mut client).await;
    assert!(!tokens.verify(&session).await.expect("valid").email_verified, "nor does the token say so");

    // Bad codes change nothing.
    let unknown = confirm(&mut client, "not-a-code").await.expect_err("unknown code");
    assert_eq!((unknown.code(), reason(&unknown).as_str()), (Code::NotFound, "TOKEN_NOT_FOUND"));
    let empty = confirm(&mut client, " ").await.expect_err("no code");
    assert_eq!(violated_fields(&empty), ["token"]);
    assert!(!me(&mut client, &session).await.email_verified);

    // No sign-in needed: the code is the proof.
    let verified = confirm(&mut client, &code.token).await.expect("verifies");
    assert_eq!(verified.id, registered.id);
    assert!(verified.email_verified, "{verified:?}");
    let verify_time = verified.email_verify_time.expect("when");
    assert!((platform::time::now_secs() - verify_time.seconds).abs() < 60);
    let shown = me(&mut client, &session).await;
    assert_eq!((shown.email_verified, shown.email_verify_time.as_ref()), (true, Some(&verify_time)));
    // Access tokens say it from the next refresh (a shop may require it for checkout).
    let refreshed = client.refresh(RefreshRequest { refresh_token: signed_in.refresh_token }).await.expect("refreshes");
    assert!(tokens.verify(&refreshed.into_inner().access_token).await.expect("valid").email_verified);
    let announced: Vec<EmailVerified> = outbox(&db, "user.email_verified").await;
    assert_eq!(announced.len(), 1);
    assert_eq!(
        (announced[0].user_id.as_str(), announced[0].email.as_str()),
        (registered.id.as_str(), "dana@example.com")
    );

    // A second click answers the same, and nothing happens twice.
    let again = confirm(&mut client, &code.token).await.expect("confirms again");
    assert_eq!(again.email_verify_time, Some(verify_time));
    assert_eq!(outbox::<EmailVerified>(&db, "user.email_verified").await.len(), 1);
    // A verified address needs no more codes.
    let needless = ask_again(&mut client, &session).await.expect_err("verified already");
    assert_eq!((needless.code(), reason(&needless).as_str()), (Code::FailedPrecondition, "EMAIL_ALREADY_VERIFIED"));
    assert_eq!(mailed(&db).await.len(), 1);
    running.stop().await;
}

async fn a_lost_code_is_mailed_again_but_not_too_often(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    register(&mut client, "erin@example.com", "erin's password", "Erin").await.expect("registers");
    let session = login(&mut client, "erin@example.com", "erin's password").await.expect("signs in").access_token;
    let anonymous = client.request_email_verification(RequestEmailVerificationRequest {}).await;
    assert_eq!(anonymous.expect_err("needs a sign-in").code(), Code::Unauthenticated);

    // Moments after registering: the first code still works and no second mail goes out.
    let first = mailed(&db).await.remove(0);
    let expires = ask_again(&mut client, &session).await.expect("answers");
    assert_eq!(expires, first.expire_time.as_ref().expect("expiry").seconds, "the mailed code's expiry");
    assert_eq!(mailed(&db).await.len(), 1);

    // Later, a new one.
    let of_erin = "user_id = (SELECT id FROM users WHERE email = $1)";
    let three_minutes_ago =
        format!("UPDATE email_verifications SET create_time = create_time - 180000000 WHERE {of_erin}");
    execute(&db, &three_minutes_ago, "erin@example.com").await;
    let expires = ask_again(&mut client, &session).await.expect("mails again");
    let codes = mailed(&db).await;
    assert_eq!(codes.len(), 2);
    assert_ne!(codes[1].token, first.token);
    assert_eq!(expires, codes[1].expire_time.as_ref().expect("expiry").seconds);
    assert!(confirm(&mut client, &codes[1].token).await.expect("the new code verifies").email_verified);
    running.stop().await;
}

async fn a_late_code_is_refused_and_leaves_the_address_unverified(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    register(&mut client, "finn@example.com", "finn's password", "Finn").await.expect("registers");
    let code = mailed(&db).await.remove(0);
    let of_finn = "user_id = (SELECT id FROM users WHERE email = $1)";
    execute(&db, &format!("UPDATE email_verifications SET expires_at = 1 WHERE {of_finn}"), "finn@example.com").await;
    let late = confirm(&mut client, &code.token).await.expect_err("expired");
    assert_eq!((late.code(), reason(&late).as_str()), (Code::FailedPrecondition, "TOKEN_EXPIRED"));
    let session = login(&mut client, "finn@example.com", "finn's password").await.expect("signs in").access_token;
    assert!(!me(&mut client, &session).await.email_verified);
    // The way out: a new code (the expired one is older than two minutes too).
    execute(&db, &format!("UPDATE email_verifications SET create_time = 1 WHERE {of_finn}"), "finn@example.com").await;
    ask_again(&mut client, &session).await.expect("mails a new code");
    let fresh = mailed(&db).await.remove(1);
    assert!(confirm(&mut client, &fresh.token).await.expect("verifies").email_verified);
    running.stop().await;
}

async fn the_first_administrator_starts_verified(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    let admin = login(&mut client, ADMIN_EMAIL, ADMIN_PASSWORD).await.expect("admin").access_token;
    let shown = me(&mut client, &admin).await;
    assert!(shown.email_verified && shown.email_verify_time.is_some(), "{shown:?}");
    assert!(mailed(&db).await.is_empty(), "no code mailed to the operator's address");
    running.stop().await;
}

on_both_backends!(
    registering_mails_a_code_that_verifies_the_address,
    a_lost_code_is_mailed_again_but_not_too_often,
    a_late_code_is_refused_and_leaves_the_address_unverified,
    the_first_administrator_starts_verified,
);
