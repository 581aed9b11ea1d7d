//! Account administration by staff: listing accounts, staff roles and their scopes, changing an account's address
//! for its owner, disabling accounts; over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set)
//! PostgreSQL.

#[macro_use]
mod support;

use api::auth::{
    ChangeUserEmailRequest, ConfirmEmailVerificationRequest, CreateApiKeyRequest, DisableUserRequest,
    EmailChangeConfirmed, EmailChanged, EmailVerificationRequested, EnableUserRequest, ExchangeApiKeyRequest,
    GetMeRequest, ListRevokedSessionsRequest, ListUsersRequest, RefreshRequest, RevertEmailChangeRequest,
    SetUserRolesRequest, User, UserDisabled, UserEnabled, UserRolesChanged,
};
use platform::Db;
use tonic::Code;

use support::*;

const PASSWORD: &str = "staff password";

async fn admin_token(client: &mut Client) -> String {
    login(client, ADMIN_EMAIL, ADMIN_PASSWORD).await.expect("the admin signs in").access_token
}

fn list(email: &str, role: &str, page_size: i32, page_token: &str) -> ListUsersRequest {
    ListUsersRequest { email: email.into(), role: role.into(), page_size, page_token: page_token.into() }
}

fn set_roles(id: &str, roles: &[&str]) -> SetUserRolesRequest {
    SetUserRolesRequest { id: id.into(), roles: roles.iter().map(|r| (*r).to_owned()).collect() }
}

async fn ended_sessions(client: &mut Client) -> Vec<String> {
    let request = ListRevokedSessionsRequest::default();
    let listed = client.list_revoked_sessions(request).await.expect("lists").into_inner();
    listed.sessions.into_iter().map(|s| s.session_id).collect()
}

async fn staff_find_accounts_by_email_and_role(db: Db) {
    let running = start(db).await;
    let mut client = running.client.clone();
    let mut registered: Vec<User> = Vec::new();
    for email in ["ann@shop.example", "andy@shop.example", "bea@example.com", "an_x@example.com"] {
        registered.push(register(&mut client, email, PASSWORD, "Staff").await.expect("registers"));
    }
    let admin = admin_token(&mut client).await;

    let emails = |users: &[User]| users.iter().map(|u| u.email.clone()).collect::<Vec<_>>();
    let all = client.list_users(bearer(list("", "", 0, ""), &admin)).await.expect("lists").into_inner();
    assert_eq!(all.users.len(), 5, "the four and the admin: {:?}", emails(&all.users));
    let ann = client.list_users(bearer(list("AN", "", 0, ""), &admin)).await.expect("lists").into_inner();
    assert_eq!(emails(&ann.users), ["ann@shop.example", "andy@shop.example", "an_x@example.com"], "oldest first");
    let literal = client.list_users(bearer(list("an_", "", 0, ""), &admin)).await.expect("lists").into_inner();
    assert_eq!(emails(&literal.users), ["an_x@example.com"], "`_` matches itself, not any character");
    let admins = client.list_users(bearer(list("", "admin", 0, ""), &admin)).await.expect("lists").into_inner();
    assert_eq!(emails(&admins.users), ["root@example.com"]);

    // A page at a time, with the same filter.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = client.list_users(bearer(list("a", "", 1, &token), &admin)).await.expect("a page").into_inner();
        assert!(page.users.len() <= 1);
        paged.extend(page.users);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(emails(&paged), emails(&ann.users));

    // Customers may not; bad filters are named.
    let customer = login(&mut client, "bea@example.com", PASSWORD).await.expect("signs in").access_token;
    let denied = client.list_users(bearer(list("", "", 0, ""), &customer)).await.expect_err("a customer");
    assert_eq!(denied.code(), Code::PermissionDenied);
    for (request, field) in [
        (list("", "owner", 0, ""), "role"),
        (list("", "", -1, ""), "page_size"),
        (list("", "", 0, "'; --"), "page_token"),
    ] {
        let refused = client.list_users(bearer(request, &admin)).await.expect_err(field);
        assert_eq!((refused.code(), violated_fields(&refused)[0].clone()), (Code::InvalidArgument, field.to_owned()));
    }
    running.stop().await;
}

async fn staff_roles_grant_their_scopes_and_taking_one_away_ends_sessions(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    let user = register(&mut client, "carl@example.com", PASSWORD, "Carl").await.expect("registers");
    let admin = admin_token(&mut client).await;
    let session = login(&mut client, "carl@example.com", PASSWORD).await.expect("signs in");

    let granted = client.set_user_roles(bearer(set_roles(&user.id, &["support"]), &admin)).await.expect("sets");
    assert_eq!(granted.into_inner().user.expect("user").roles, ["customer", "support"], "customer is kept");
    // An added role comes with the next refresh; the session goes on.
    let refreshed = client
        .refresh(RefreshRequest { refresh_token: session.refresh_token.clone() })
        .await
        .expect("the session lives on")
        .into_inner();
    let claims = verifier(&mut client).await.verify(&refreshed.access_token).await.expect("valid");
    assert!(claims.has_scope("support:agent") && !claims.has_scope("ledger:write"), "{}", claims.scope);
    assert!(ended_sessions(&mut client).await.is_empty());

    // Taking it away ends the session: refresh refused, the session listed as ended.
    let taken = client.set_user_roles(bearer(set_roles(&user.id, &["catalog"]), &admin)).await.expect("sets");
    assert_eq!(taken.into_inner().user.expect("user").roles, ["customer", "catalog"]);
    let refused = client.refresh(RefreshRequest { refresh_token: refreshed.refresh_token.clone() }).await;
    assert_eq!(refused.expect_err("signed out").code(), Code::Unauthenticated);
    assert_eq!(ended_sessions(&mut client).await, [claims.sid]);

    // Unknown roles are named; an unknown account is 404; nobody takes their own admin role away.
    let unknown = client.set_user_roles(bearer(set_roles(&user.id, &["catalog", "owner"]), &admin)).await;
    assert_eq!(violated_fields(&unknown.expect_err("unknown role"))[0], "roles[1]");
    let nobody = client.set_user_roles(bearer(set_roles("0190-none", &["support"]), &admin)).await;
    assert_eq!(nobody.expect_err("no such account").code(), Code::NotFound);
    let admin_id = verifier(&mut client).await.verify(&admin).await.expect("valid").sub;
    let own = client.set_user_roles(bearer(set_roles(&admin_id, &["support"]), &admin)).await.expect_err("own");
    assert_eq!((own.code(), reason(&own)), (Code::FailedPrecondition, "OWN_ACCOUNT".to_owned()));
    let customer = login(&mut client, "carl@example.com", PASSWORD).await.expect("signs in").access_token;
    let denied = client.set_user_roles(bearer(set_roles(&user.id, &["admin"]), &customer)).await;
    assert_eq!(denied.expect_err("not staff").code(), Code::PermissionDenied, "no one grants themselves admin");

    // Each change is announced (the owner is mailed, a webhook keeps the trail); the same roles again are not.
    client.set_user_roles(bearer(set_roles(&user.id, &["catalog"]), &admin)).await.expect("the same roles");
    let changes: Vec<UserRolesChanged> = outbox(&db, "user.roles_changed").await;
    let seen: Vec<(Vec<String>, Vec<String>)> =
        changes.iter().map(|c| (c.previous_roles.clone(), c.roles.clone())).collect();
    let roles = |names: &[&str]| names.iter().map(|r| (*r).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        seen,
        [
            (roles(&["customer"]), roles(&["customer", "support"])),
            (roles(&["customer", "support"]), roles(&["customer", "catalog"]))
        ]
    );
    assert!(changes.iter().all(|c| c.changed_by == admin_id && c.email == "carl@example.com"), "{changes:?}");
    running.stop().await;
}

async fn a_disabled_account_cannot_sign_in_until_enabled(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    let user = register(&mut client, "dora@example.com", PASSWORD, "Dora").await.expect("registers");
    let admin = admin_token(&mut client).await;
    let session = login(&mut client, "dora@example.com", PASSWORD).await.expect("signs in");
    let sid = verifier(&mut client).await.verify(&session.access_token).await.expect("valid").sid;
    let key_request = CreateApiKeyRequest { name: "sync".into(), scopes: vec!["cart:write".into()], ttl_days: 30 };
    let key = client.create_api_key(bearer(key_request, &session.access_token)).await.expect("a key").into_inner();

    let disable = || bearer(DisableUserRequest { id: user.id.clone() }, &admin);
    let disabled = client.disable_user(disable()).await.expect("disables").into_inner().user.expect("user");
    let disabled_at = disabled.disable_time.expect("a disable time");
    let again = client.disable_user(disable()).await.expect("again").into_inner().user.expect("user");
    assert_eq!(again.disable_time, Some(disabled_at), "disabling twice keeps the first time");

    let wrong = login(&mut client, "dora@example.com", "not her password").await.expect_err("wrong password");
    assert_eq!(wrong.code(), Code::Unauthenticated, "only the password's owner learns the account is disabled");
    let refused = login(&mut client, "dora@example.com", PASSWORD).await.expect_err("disabled");
    assert_eq!((refused.code(), reason(&refused)), (Code::PermissionDenied, "ACCOUNT_DISABLED".to_owned()));
    let refresh = client.refresh(RefreshRequest { refresh_token: session.refresh_token.clone() }).await;
    assert_eq!(refresh.expect_err("signed out").code(), Code::Unauthenticated);
    assert_eq!(ended_sessions(&mut client).await, [sid]);
    let exchange = || ExchangeApiKeyRequest { api_key: key.secret.clone() };
    let key_refused = client.exchange_api_key(exchange()).await.expect_err("the key stops working");
    assert_eq!(key_refused.code(), Code::Unauthenticated);
    let admin_id = verifier(&mut client).await.verify(&admin).await.expect("valid").sub;
    let own = client.disable_user(bearer(DisableUserRequest { id: admin_id.clone() }, &admin)).await.expect_err("own");
    assert_eq!(reason(&own), "OWN_ACCOUNT");

    let enabled = client.enable_user(bearer(EnableUserRequest { id: user.id.clone() }, &admin)).await.expect("enables");
    assert_eq!(enabled.into_inner().user.expect("user").disable_time, None);
    login(&mut client, "dora@example.com", PASSWORD).await.expect("signs in again");
    client.exchange_api_key(exchange()).await.expect("the key works again: nothing was deleted");
    let nobody = client.enable_user(bearer(EnableUserRequest { id: "0190-none".into() }, &admin)).await;
    assert_eq!(nobody.expect_err("no such account").code(), Code::NotFound);
    client.enable_user(bearer(EnableUserRequest { id: user.id.clone() }, &admin)).await.expect("enabled already");

    // The owner is told once of each: disabled twice and enabled twice announce one of each.
    let disables: Vec<UserDisabled> = outbox(&db, "user.disabled").await;
    let enables: Vec<UserEnabled> = outbox(&db, "user.enabled").await;
    assert_eq!((disables.len(), enables.len()), (1, 1), "{disables:?} {enables:?}");
    assert_eq!((disables[0].email.as_str(), disables[0].disable_time), ("dora@example.com", Some(disabled_at)));
    assert_eq!(
        (disables[0].disabled_by.as_str(), enables[0].enabled_by.as_str()),
        (admin_id.as_str(), admin_id.as_str())
    );
    running.stop().await;
}

/// Sign-ins that check the password while staff disable the account leave no session alive: each either sees
/// the account disabled or is ended by the disable.
async fn sign_ins_racing_a_disable_leave_no_live_session(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    let user = register(&mut client, "eve@example.com", PASSWORD, "Eve").await.expect("registers");
    let admin = admin_token(&mut client).await;
    let sign_ins: Vec<_> = (0..8)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { login(&mut client, "eve@example.com", PASSWORD).await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    client.disable_user(bearer(DisableUserRequest { id: user.id.clone() }, &admin)).await.expect("disables");
    for sign_in in sign_ins {
        if let Err(status) = sign_in.await.expect("task") {
            assert_eq!(reason(&status), "ACCOUNT_DISABLED");
        }
    }
    let live: i64 = platform::with_db!(&db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(&user.id)
            .fetch_one(pool)
            .await
            .expect("count")
    });
    assert_eq!(live, 0, "a session outlived the disable");
    running.stop().await;
}

async fn staff_move_an_account_for_its_owner_and_the_old_address_can_undo_it(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    let gus = register(&mut client, "gus@example.com", PASSWORD, "Gus").await.expect("registers");
    register(&mut client, "hal@example.com", PASSWORD, "Hal").await.expect("registers");
    let session = login(&mut client, "gus@example.com", PASSWORD).await.expect("signs in").access_token;
    let admin = admin_token(&mut client).await;
    let change = |id: &str, email: &str| ChangeUserEmailRequest { id: id.into(), email: email.into() };

    // Refused, changing nothing: a customer, the account's own address, one with an account, no such account.
    let customer = client.change_user_email(bearer(change(&gus.id, "gus@example.org"), &session)).await;
    assert_eq!(customer.expect_err("a customer").code(), Code::PermissionDenied);
    let same = client.change_user_email(bearer(change(&gus.id, " GUS@example.com"), &admin)).await;
    assert_eq!(violated_fields(&same.expect_err("same")), ["email"]);
    let taken = client.change_user_email(bearer(change(&gus.id, "hal@example.com"), &admin)).await;
    assert_eq!(reason(&taken.expect_err("taken")), "EMAIL_TAKEN");
    let nobody =
        client.change_user_email(bearer(change("01a24ea1-0000-7000-8000-000000000000", "x@example.org"), &admin));
    assert_eq!(nobody.await.expect_err("no account").code(), Code::NotFound);

    // Moved at once, unverified; the owner's session goes on and the new address signs in.
    let moved = client.change_user_email(bearer(change(&gus.id, "Gus@Example.org"), &admin)).await.expect("moved");
    let moved = moved.into_inner().user.expect("user");
    assert_eq!((moved.email.as_str(), moved.email_verified), ("gus@example.org", false));
    let me = client.get_me(bearer(GetMeRequest {}, &session)).await.expect("the session goes on").into_inner();
    let me = me.user.expect("user");
    assert_eq!((me.email.as_str(), me.email_verified), ("gus@example.org", false), "nobody proved the mailbox");
    login(&mut client, "gus@example.org", PASSWORD).await.expect("the new address signs in");
    let changed: Vec<EmailChanged> = outbox(&db, "user.email_changed").await;
    let admin_me = client.get_me(bearer(GetMeRequest {}, &admin)).await.expect("admin").into_inner();
    assert_eq!((changed.len(), changed[0].previous_email.as_str()), (1, "gus@example.com"));
    assert_eq!(changed[0].changed_by, admin_me.user.expect("user").id, "names the staff member");

    // The new mailbox gets a code that verifies it; the old one is told, with a code that undoes the move.
    let codes: Vec<EmailVerificationRequested> = outbox(&db, "user.email_verification_requested").await;
    let code = codes.iter().rfind(|c| c.user_id == gus.id).expect("a code");
    assert_eq!(code.email, "gus@example.org");
    let told: Vec<EmailChangeConfirmed> = outbox(&db, "user.email_change_confirmed").await;
    assert_eq!((told.len(), told[0].previous_email.as_str()), (1, "gus@example.com"));
    let verify = ConfirmEmailVerificationRequest { token: code.token.clone() };
    let verified = client.confirm_email_verification(verify).await.expect("verifies").into_inner().user;
    assert!(verified.expect("user").email_verified);
    let undo = RevertEmailChangeRequest { token: told[0].token.clone(), new_password: "gus's own again".into() };
    let back = client.revert_email_change(undo).await.expect("undone").into_inner().user.expect("user");
    assert_eq!(back.email, "gus@example.com");
    running.stop().await;
}

on_both_backends!(
    staff_move_an_account_for_its_owner_and_the_old_address_can_undo_it,
    sign_ins_racing_a_disable_leave_no_live_session,
    staff_find_accounts_by_email_and_role,
    staff_roles_grant_their_scopes_and_taking_one_away_ends_sessions,
    a_disabled_account_cannot_sign_in_until_enabled,
);
