//! Moving an account to another address with a code mailed there, and taking it back with the code mailed to
//! the address it left ("this wasn't me"), over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is
//! set) PostgreSQL.

#[macro_use]
mod support;

use api::auth::{
    ConfirmEmailChangeRequest, ConfirmEmailVerificationRequest, ConfirmPasswordResetRequest, CreateApiKeyRequest,
    DisableUserRequest, EmailChangeConfirmed, EmailChangeRequested, EmailChanged, ExchangeApiKeyRequest, GetMeRequest,
    PasswordChangeMethod, PasswordChanged, RequestEmailChangeRequest, RequestPasswordResetRequest,
    RevertEmailChangeRequest, User,
};
use platform::Db;
use tonic::Code;

use support::*;

/// The codes mailed so far (the payloads of `user.email_change_requested`), oldest first.
async fn mailed(db: &Db) -> Vec<EmailChangeRequested> {
    outbox(db, "user.email_change_requested").await
}

async fn changes(db: &Db) -> Vec<EmailChanged> {
    outbox(db, "user.email_changed").await
}

/// The notices mailed to the addresses accounts left, with the codes that undo the moves, oldest first.
async fn undo_codes(db: &Db) -> Vec<EmailChangeConfirmed> {
    outbox(db, "user.email_change_confirmed").await
}

async fn revert(client: &mut Client, token: &str, new_password: &str) -> Result<User, tonic::Status> {
    let request = RevertEmailChangeRequest { token: token.to_owned(), new_password: new_password.to_owned() };
    Ok(client.revert_email_change(request).await?.into_inner().user.expect("user"))
}

/// Moves the account signed in as `session` to `new_email` with the code mailed there.
async fn move_to(client: &mut Client, db: &Db, session: &str, new_email: &str, password: &str) -> User {
    ask(client, session, new_email, password).await.expect("mailed");
    let code = mailed(db).await.into_iter().rfind(|c| c.email == new_email).expect("the code");
    confirm(client, &code.token).await.expect("moves")
}

/// Asks to move the signed-in account to `new_email`; the answer's expiry in seconds.
async fn ask(client: &mut Client, session: &str, new_email: &str, password: &str) -> Result<i64, tonic::Status> {
    let request = RequestEmailChangeRequest { new_email: new_email.to_owned(), password: password.to_owned() };
    let response = client.request_email_change(bearer(request, session)).await?;
    Ok(response.into_inner().expire_time.expect("expire time").seconds)
}

async fn confirm(client: &mut Client, token: &str) -> Result<User, tonic::Status> {
    let request = ConfirmEmailChangeRequest { token: token.to_owned() };
    Ok(client.confirm_email_change(request).await?.into_inner().user.expect("user"))
}

async fn me(client: &mut Client, token: &str) -> User {
    client.get_me(bearer(GetMeRequest {}, token)).await.expect("me").into_inner().user.expect("user")
}

// --- scenarios ---------------------------------------------------------------------------------------------

async fn an_account_moves_only_when_the_new_mailbox_confirms(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    let ann = register(&mut client, "ann@example.com", "ann's password", "Ann").await.expect("registers");
    register(&mut client, "bob@example.com", "bob's password", "Bob").await.expect("registers");
    let session = login(&mut client, "ann@example.com", "ann's password").await.expect("signs in").access_token;
    // Tokens mailed to the old address before the move.
    let reset = RequestPasswordResetRequest { email: "ann@example.com".into() };
    client.request_password_reset(reset).await.expect("reset mailed");
    let resets: Vec<api::auth::PasswordResetRequested> = outbox(&db, "user.password_reset_requested").await;
    let verifications: Vec<api::auth::EmailVerificationRequested> =
        outbox(&db, "user.email_verification_requested").await;
    let old_verification = verifications.iter().find(|v| v.user_id == ann.id).expect("ann's code").token.clone();

    // Refused, mailing nothing: no sign-in, a wrong password, the same address, an address with an account.
    let anonymous =
        RequestEmailChangeRequest { new_email: "ann@example.org".into(), password: "ann's password".into() };
    let anonymous = client.request_email_change(anonymous).await.expect_err("needs a sign-in");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let wrong = ask(&mut client, &session, "ann@example.org", "not it").await.expect_err("wrong password");
    assert_eq!(violated_fields(&wrong), ["password"]);
    let same = ask(&mut client, &session, " ANN@example.com", "ann's password").await.expect_err("same address");
    assert_eq!(violated_fields(&same), ["new_email"]);
    let bad = ask(&mut client, &session, "not an address", "").await.expect_err("bad input");
    assert_eq!(violated_fields(&bad), ["new_email", "password"]);
    let taken = ask(&mut client, &session, "Bob@Example.com", "ann's password").await.expect_err("taken");
    assert_eq!((taken.code(), reason(&taken).as_str()), (Code::AlreadyExists, "EMAIL_TAKEN"));
    assert!(mailed(&db).await.is_empty());

    // The code goes to the new address, and the account stays where it is until it comes back.
    let expires = ask(&mut client, &session, " Ann@Example.ORG ", "ann's password").await.expect("mailed");
    let codes = mailed(&db).await;
    assert_eq!(codes.len(), 1);
    let code = &codes[0];
    assert_eq!(
        (code.user_id.as_str(), code.email.as_str(), code.current_email.as_str()),
        (ann.id.as_str(), "ann@example.org", "ann@example.com")
    );
    assert_eq!(expires, code.expire_time.as_ref().expect("expiry").seconds);
    let valid_for = expires - platform::time::now_secs();
    assert!((23 * 3600..=24 * 3600).contains(&valid_for), "a day: {valid_for} s");
    assert_eq!(me(&mut client, &session).await.email, "ann@example.com");
    login(&mut client, "ann@example.com", "ann's password").await.expect("the old address still signs in");

    // Bad codes change nothing.
    let unknown = confirm(&mut client, "not-a-code").await.expect_err("unknown code");
    assert_eq!((unknown.code(), reason(&unknown).as_str()), (Code::NotFound, "TOKEN_NOT_FOUND"));
    assert_eq!(violated_fields(&confirm(&mut client, "  ").await.expect_err("no code")), ["token"]);

    // The code moves the account, without a sign-in; the new address counts as verified.
    let moved = confirm(&mut client, &code.token).await.expect("moves");
    assert_eq!((moved.id.as_str(), moved.email.as_str()), (ann.id.as_str(), "ann@example.org"));
    assert!(moved.email_verified && moved.email_verify_time.is_some(), "{moved:?}");
    assert_eq!(me(&mut client, &session).await.email, "ann@example.org", "the session goes on");
    login(&mut client, "ann@example.org", "ann's password").await.expect("the new address signs in");
    let old = login(&mut client, "ann@example.com", "ann's password").await.expect_err("the old does not");
    assert_eq!(old.code(), Code::Unauthenticated);
    let told = changes(&db).await;
    assert_eq!(told.len(), 1);
    assert_eq!(
        (told[0].user_id.as_str(), told[0].email.as_str(), told[0].previous_email.as_str()),
        (ann.id.as_str(), "ann@example.org", "ann@example.com")
    );
    assert_eq!((told[0].display_name.as_str(), told[0].locale.as_str()), ("Ann", "en"));

    // What was mailed to the old address no longer works there.
    let reset = ConfirmPasswordResetRequest { token: resets[0].token.clone(), new_password: "taken over!".into() };
    let reset = client.confirm_password_reset(reset).await.expect_err("the old mailbox's reset");
    assert_eq!(reason(&reset), "TOKEN_NOT_FOUND");
    let verify = ConfirmEmailVerificationRequest { token: old_verification };
    let verify = client.confirm_email_verification(verify).await.expect_err("the old mailbox's code");
    assert_eq!(reason(&verify), "TOKEN_NOT_FOUND");

    // A second click answers the same; nothing happens twice. The old address is free again.
    let again = confirm(&mut client, &code.token).await.expect("confirms again");
    assert_eq!((again.email.as_str(), again.email_verify_time), ("ann@example.org", moved.email_verify_time));
    assert_eq!(changes(&db).await.len(), 1);
    register(&mut client, "ann@example.com", "another password", "Another Ann").await.expect("free again");
    running.stop().await;
}

async fn only_the_newest_request_counts_and_one_address_is_not_mailed_again_at_once(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    register(&mut client, "cleo@example.com", "cleo's password", "Cleo").await.expect("registers");
    let session = login(&mut client, "cleo@example.com", "cleo's password").await.expect("signs in").access_token;

    let first = ask(&mut client, &session, "cleo@exmaple.com", "cleo's password").await.expect("mailed");
    // Asking again for the same address at once: the same code still works, no second mail.
    let again = ask(&mut client, &session, "cleo@exmaple.com", "cleo's password").await.expect("answers");
    assert_eq!(again, first);
    assert_eq!(mailed(&db).await.len(), 1);
    // The typo noticed: another address at once gets its own code, and the first stops working.
    ask(&mut client, &session, "cleo@example.org", "cleo's password").await.expect("mailed");
    let codes = mailed(&db).await;
    assert_eq!(codes.iter().map(|c| c.email.as_str()).collect::<Vec<_>>(), ["cleo@exmaple.com", "cleo@example.org"]);
    let replaced = confirm(&mut client, &codes[0].token).await.expect_err("replaced");
    assert_eq!((replaced.code(), reason(&replaced).as_str()), (Code::NotFound, "TOKEN_NOT_FOUND"));
    assert_eq!(me(&mut client, &session).await.email, "cleo@example.com");
    assert_eq!(confirm(&mut client, &codes[1].token).await.expect("moves").email, "cleo@example.org");
    running.stop().await;
}

async fn a_late_code_or_a_taken_address_leaves_the_account_where_it_is(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    register(&mut client, "dora@example.com", "dora's password", "Dora").await.expect("registers");
    let session = login(&mut client, "dora@example.com", "dora's password").await.expect("signs in").access_token;

    ask(&mut client, &session, "dora@example.org", "dora's password").await.expect("mailed");
    let late = mailed(&db).await.remove(0);
    let of_dora = "user_id = (SELECT id FROM users WHERE email = $1)";
    execute(&db, &format!("UPDATE email_changes SET expires_at = 1 WHERE {of_dora}"), "dora@example.com").await;
    let expired = confirm(&mut client, &late.token).await.expect_err("expired");
    assert_eq!((expired.code(), reason(&expired).as_str()), (Code::FailedPrecondition, "TOKEN_EXPIRED"));

    // Someone registers the new address while the mail is unread.
    ask(&mut client, &session, "dora@example.net", "dora's password").await.expect("mailed");
    let code = mailed(&db).await.remove(1);
    register(&mut client, "dora@example.net", "someone else's", "Not Dora").await.expect("registers first");
    let taken = confirm(&mut client, &code.token).await.expect_err("taken meanwhile");
    assert_eq!((taken.code(), reason(&taken).as_str()), (Code::AlreadyExists, "EMAIL_TAKEN"));
    let unchanged = me(&mut client, &session).await;
    assert_eq!((unchanged.email.as_str(), unchanged.email_verified), ("dora@example.com", false));

    // A code mailed before staff disabled the account: its holder proved the mailbox, not the account.
    ask(&mut client, &session, "dora@example.info", "dora's password").await.expect("mailed");
    let code = mailed(&db).await.remove(2);
    let admin = login(&mut client, ADMIN_EMAIL, ADMIN_PASSWORD).await.expect("admin").access_token;
    let disable = DisableUserRequest { id: unchanged.id.clone() };
    client.disable_user(bearer(disable, &admin)).await.expect("disabled");
    let refused = confirm(&mut client, &code.token).await.expect_err("disabled");
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::PermissionDenied, "ACCOUNT_DISABLED"));
    assert!(changes(&db).await.is_empty(), "no move happened");
    running.stop().await;
}

async fn the_address_left_takes_the_account_back_with_a_new_password(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    let eve = register(&mut client, "eve@example.com", "eve's password", "Eve").await.expect("registers");
    // Someone who knows Eve's password signs in, makes an API key and moves the account to their address.
    let theirs = login(&mut client, "eve@example.com", "eve's password").await.expect("signs in");
    let key = CreateApiKeyRequest { name: "backdoor".into(), scopes: vec!["cart:write".into()], ttl_days: 30 };
    let key = client.create_api_key(bearer(key, &theirs.access_token)).await.expect("a key").into_inner();
    move_to(&mut client, &db, &theirs.access_token, "mallory@example.net", "eve's password").await;

    // The address left is told, with a code that works for a week.
    let told = undo_codes(&db).await;
    assert_eq!(told.len(), 1);
    let undo = &told[0];
    assert_eq!(
        (undo.user_id.as_str(), undo.previous_email.as_str(), undo.email.as_str()),
        (eve.id.as_str(), "eve@example.com", "mallory@example.net")
    );
    let valid_for = undo.expire_time.as_ref().expect("expiry").seconds - platform::time::now_secs();
    assert!((7 * 24 * 3600 - 60..=7 * 24 * 3600).contains(&valid_for), "a week: {valid_for} s");

    // Bad requests change nothing.
    let weak = revert(&mut client, &undo.token, "short").await.expect_err("weak password");
    assert_eq!(violated_fields(&weak), ["new_password"]);
    let unknown = revert(&mut client, "not-a-code", "eve's new password").await.expect_err("unknown");
    assert_eq!((unknown.code(), reason(&unknown).as_str()), (Code::NotFound, "TOKEN_NOT_FOUND"));
    login(&mut client, "mallory@example.net", "eve's password").await.expect("still moved");

    // The code takes the account back, with a new password, signing everyone out.
    let back = revert(&mut client, &undo.token, "eve's new password").await.expect("taken back");
    assert_eq!(
        (back.id.as_str(), back.email.as_str(), back.email_verified),
        (eve.id.as_str(), "eve@example.com", true)
    );
    login(&mut client, "eve@example.com", "eve's new password").await.expect("Eve signs in");
    for (email, password) in [("eve@example.com", "eve's password"), ("mallory@example.net", "eve's new password")] {
        let refused = login(&mut client, email, password).await.expect_err("no longer");
        assert_eq!(refused.code(), Code::Unauthenticated, "{email}");
    }
    let session = refresh(&mut client, &theirs.refresh_token).await.expect_err("their session ended");
    assert_eq!(session.code(), Code::Unauthenticated);
    let exchanged = client.exchange_api_key(ExchangeApiKeyRequest { api_key: key.secret }).await;
    assert_eq!(exchanged.expect_err("their key is revoked").code(), Code::Unauthenticated);

    // The services follow the address back; the owner is told of the new password.
    let moves = changes(&db).await;
    let last = moves.last().expect("the way back");
    assert_eq!(
        (moves.len(), last.email.as_str(), last.previous_email.as_str()),
        (2, "eve@example.com", "mallory@example.net")
    );
    let passwords: Vec<PasswordChanged> = outbox(&db, "user.password_changed").await;
    assert_eq!(passwords.len(), 1);
    assert_eq!((passwords[0].email.as_str(), passwords[0].method()), ("eve@example.com", PasswordChangeMethod::Reset));

    // A code works once.
    let again = revert(&mut client, &undo.token, "yet another one").await.expect_err("used");
    assert_eq!((again.code(), reason(&again).as_str()), (Code::NotFound, "TOKEN_NOT_FOUND"));
    running.stop().await;
}

async fn an_undo_code_restores_its_address_unless_late_taken_or_disabled(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    register(&mut client, "fay@example.com", "fay's password", "Fay").await.expect("registers");
    let session = login(&mut client, "fay@example.com", "fay's password").await.expect("signs in").access_token;

    // Two moves: the first address's code still works, and takes it home past the second.
    move_to(&mut client, &db, &session, "fay@example.org", "fay's password").await;
    move_to(&mut client, &db, &session, "fay@example.net", "fay's password").await;
    let codes = undo_codes(&db).await;
    assert_eq!(
        codes.iter().map(|c| c.previous_email.as_str()).collect::<Vec<_>>(),
        ["fay@example.com", "fay@example.org"]
    );
    let home = revert(&mut client, &codes[0].token, "fay's new password").await.expect("home");
    assert_eq!(home.email, "fay@example.com");
    let later = revert(&mut client, &codes[1].token, "fay's other password").await.expect_err("spent with it");
    assert_eq!(reason(&later), "TOKEN_NOT_FOUND");

    // A late code, then an address someone registered meanwhile: refused, the account stays where it is.
    let session = login(&mut client, "fay@example.com", "fay's new password").await.expect("signs in").access_token;
    move_to(&mut client, &db, &session, "fay@example.info", "fay's new password").await;
    let late = undo_codes(&db).await.remove(2);
    execute(&db, "UPDATE email_change_reverts SET expires_at = 1 WHERE previous_email = $1", "fay@example.com").await;
    let expired = revert(&mut client, &late.token, "fay's third password").await.expect_err("late");
    assert_eq!((expired.code(), reason(&expired).as_str()), (Code::FailedPrecondition, "TOKEN_EXPIRED"));
    execute(
        &db,
        "UPDATE email_change_reverts SET expires_at = 9000000000000000 WHERE previous_email = $1",
        "fay@example.com",
    )
    .await;
    register(&mut client, "fay@example.com", "someone's password", "Not Fay").await.expect("the address is free");
    let taken = revert(&mut client, &late.token, "fay's third password").await.expect_err("taken");
    assert_eq!((taken.code(), reason(&taken).as_str()), (Code::AlreadyExists, "EMAIL_TAKEN"));
    login(&mut client, "fay@example.info", "fay's new password").await.expect("unchanged");

    // A disabled account stays as staff left it.
    let fay = me(&mut client, &session).await;
    let admin = login(&mut client, ADMIN_EMAIL, ADMIN_PASSWORD).await.expect("admin").access_token;
    client.disable_user(bearer(DisableUserRequest { id: fay.id.clone() }, &admin)).await.expect("disabled");
    let disabled = revert(&mut client, &late.token, "fay's third password").await.expect_err("disabled");
    assert_eq!((disabled.code(), reason(&disabled).as_str()), (Code::PermissionDenied, "ACCOUNT_DISABLED"));
    running.stop().await;
}

on_both_backends!(
    the_address_left_takes_the_account_back_with_a_new_password,
    an_undo_code_restores_its_address_unless_late_taken_or_disabled,
    an_account_moves_only_when_the_new_mailbox_confirms,
    only_the_newest_request_counts_and_one_address_is_not_mailed_again_at_once,
    a_late_code_or_a_taken_address_leaves_the_account_where_it_is,
);
