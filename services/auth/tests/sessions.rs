//! Ended sessions: every way a session ends lists it (`ListRevokedSessions`) and its access tokens are refused
//! before they expire; over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL.

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use api::auth::{
    ChangePasswordRequest, DeleteAccountRequest, GetMeRequest, ListRevokedSessionsRequest, ListSessionsRequest,
    LogoutRequest, RefreshRequest, RevokeOtherSessionsRequest, RevokeSessionRequest, Session,
};
use platform::{Db, with_db};
use tonic::Code;

use support::*;

const EMAIL: &str = "sam@example.com";
const PASSWORD: &str = "sams password";

/// The session (`sid`) of an access token.
async fn session_of(client: &mut Client, access_token: &str) -> String {
    let claims = verifier(client).await.verify(access_token).await.expect("a valid token");
    assert!(!claims.sid.is_empty(), "a user's token names its session");
    claims.sid
}

/// Every listed session, from `since` on, read a page of `page_size` at a time.
async fn listed(client: &mut Client, since: Option<prost_types::Timestamp>, page_size: i32) -> Vec<String> {
    let mut sessions = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListRevokedSessionsRequest { since, page_size, page_token };
        let page = client.list_revoked_sessions(request).await.expect("lists").into_inner();
        if page_size > 0 {
            assert!(page.sessions.len() <= page_size as usize, "a page holds at most page_size");
        }
        sessions.extend(page.sessions.into_iter().map(|s| s.session_id));
        if page.next_page_token.is_empty() {
            return sessions;
        }
        page_token = page.next_page_token;
    }
}

/// Waits until the service itself refuses `access_token` (it reads the list every few seconds).
async fn refused_within_seconds(client: &mut Client, access_token: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client.get_me(bearer(GetMeRequest {}, access_token)).await {
            Err(status) if status.code() == Code::Unauthenticated => {
                assert!(status.message().contains("session has ended"), "{}", status.message());
                return;
            }
            other => assert!(Instant::now() < deadline, "an ended session's token is still honoured: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn every_way_a_session_ends_lists_it(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    register(&mut client, EMAIL, PASSWORD, "Sam").await.expect("registers");
    let signed_out = login(&mut client, EMAIL, PASSWORD).await.expect("logs in");
    let reused = login(&mut client, EMAIL, PASSWORD).await.expect("logs in again");
    let changing = login(&mut client, EMAIL, PASSWORD).await.expect("and again");
    let signed_out_sid = session_of(&mut client, &signed_out.access_token).await;
    let reused_sid = session_of(&mut client, &reused.access_token).await;
    let changing_sid = session_of(&mut client, &changing.access_token).await;
    assert!(signed_out_sid != reused_sid && reused_sid != changing_sid, "each sign-in is a session of its own");
    let refreshed = client
        .refresh(RefreshRequest { refresh_token: reused.refresh_token.clone() })
        .await
        .expect("rotates")
        .into_inner();
    assert_eq!(session_of(&mut client, &refreshed.access_token).await, reused_sid, "a refresh stays in its session");
    assert!(listed(&mut client, None, 0).await.is_empty(), "no session has ended yet");

    // Signing out; presenting a spent refresh token again (its family is revoked); changing the password (every
    // session of the account ends, and the caller gets a new one).
    client.logout(LogoutRequest { refresh_token: signed_out.refresh_token.clone() }).await.expect("signs out");
    let replay = client.refresh(RefreshRequest { refresh_token: reused.refresh_token.clone() }).await;
    assert_eq!(replay.expect_err("a spent token").code(), Code::Unauthenticated);
    let change = ChangePasswordRequest { current_password: PASSWORD.into(), new_password: "sams new password".into() };
    let changed = client.change_password(bearer(change, &changing.access_token)).await.expect("changes").into_inner();
    let new_sid = session_of(&mut client, &changed.access_token).await;

    let ended = listed(&mut client, None, 0).await;
    assert_eq!(ended, [signed_out_sid.clone(), reused_sid.clone(), changing_sid.clone()], "oldest first");
    assert_eq!(listed(&mut client, None, 1).await, ended, "a page at a time, none repeated or skipped");
    client.logout(LogoutRequest { refresh_token: signed_out.refresh_token.clone() }).await.expect("again");
    assert_eq!(listed(&mut client, None, 0).await, ended, "signing out twice ends the session once");

    // `since` leaves out what ended before.
    let first_ended: i64 = with_db!(&db, pool => {
        sqlx::query_scalar("SELECT revoke_time FROM revoked_sessions WHERE session_id = $1")
            .bind(&signed_out_sid).fetch_one(pool).await.expect("listed")
    });
    let since = Some(platform::time::timestamp(first_ended + 1));
    assert_eq!(listed(&mut client, since, 0).await, ended[1..], "ended after `since`");

    // The ended sessions' tokens are refused by the service itself; the new session's is honoured.
    refused_within_seconds(&mut client, &signed_out.access_token).await;
    refused_within_seconds(&mut client, &refreshed.access_token).await;
    refused_within_seconds(&mut client, &changing.access_token).await;
    client.get_me(bearer(GetMeRequest {}, &changed.access_token)).await.expect("the new session lives");

    // Deleting the account ends its last session, though its refresh tokens are gone.
    let delete = DeleteAccountRequest { password: "sams new password".into() };
    client.delete_account(bearer(delete, &changed.access_token)).await.expect("deletes");
    let ended = listed(&mut client, None, 0).await;
    assert_eq!(ended.last(), Some(&new_sid), "{ended:?}");
    running.stop().await;
}

/// The caller's own sessions, a page of `page_size` at a time.
async fn own_sessions(client: &mut Client, access_token: &str, page_size: i32) -> Vec<Session> {
    let mut sessions = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = bearer(ListSessionsRequest { page_size, page_token }, access_token);
        let page = client.list_sessions(request).await.expect("lists").into_inner();
        sessions.extend(page.sessions);
        if page.next_page_token.is_empty() {
            return sessions;
        }
        page_token = page.next_page_token;
    }
}

async fn owners_list_and_end_their_sessions(db: Db) {
    let running = start(db).await;
    let mut client = running.client.clone();
    register(&mut client, EMAIL, PASSWORD, "Sam").await.expect("registers");
    register(&mut client, "other@example.com", PASSWORD, "Other").await.expect("registers");
    let phone = login(&mut client, EMAIL, PASSWORD).await.expect("signs in");
    let laptop = login(&mut client, EMAIL, PASSWORD).await.expect("signs in");
    let tablet = login(&mut client, EMAIL, PASSWORD).await.expect("signs in");
    let stranger = login(&mut client, "other@example.com", PASSWORD).await.expect("signs in");
    let (phone_sid, laptop_sid) =
        (session_of(&mut client, &phone.access_token).await, session_of(&mut client, &laptop.access_token).await);
    let tablet_sid = session_of(&mut client, &tablet.access_token).await;
    let stranger_sid = session_of(&mut client, &stranger.access_token).await;

    let mine = own_sessions(&mut client, &laptop.access_token, 0).await;
    let ids: Vec<&str> = mine.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [phone_sid.as_str(), laptop_sid.as_str(), tablet_sid.as_str()], "oldest first, only Sam's");
    let current: Vec<bool> = mine.iter().map(|s| s.current).collect();
    assert_eq!(current, [false, true, false], "the caller's own is marked");
    let micros = |t: &Option<prost_types::Timestamp>| t.as_ref().and_then(platform::time::micros).expect("a time");
    assert!(mine.iter().all(|s| micros(&s.expire_time) > micros(&s.refresh_time)), "{mine:?}");
    assert_eq!(own_sessions(&mut client, &laptop.access_token, 1).await, mine, "a page at a time");

    // A refresh moves a session's refresh time, not its sign-in.
    tokio::time::sleep(Duration::from_millis(5)).await;
    client.refresh(RefreshRequest { refresh_token: tablet.refresh_token.clone() }).await.expect("refreshes");
    let tablet_now = own_sessions(&mut client, &laptop.access_token, 0).await.remove(2);
    assert_eq!(tablet_now.create_time, mine[2].create_time);
    assert!(micros(&tablet_now.refresh_time) > micros(&mine[2].refresh_time), "{tablet_now:?}");

    // Ending one: the phone. Someone else's session, or one ended already, is not found.
    let end = |id: &str| bearer(RevokeSessionRequest { id: id.into() }, &laptop.access_token);
    client.revoke_session(end(&phone_sid)).await.expect("ends the phone's session");
    let again = client.revoke_session(end(&phone_sid)).await.expect_err("ended already");
    assert_eq!(again.code(), Code::NotFound);
    let not_mine = client.revoke_session(end(&stranger_sid)).await.expect_err("someone else's");
    assert_eq!(not_mine.code(), Code::NotFound);
    let replay = client.refresh(RefreshRequest { refresh_token: phone.refresh_token.clone() }).await;
    assert_eq!(replay.expect_err("its refresh token is revoked").code(), Code::Unauthenticated);
    refused_within_seconds(&mut client, &phone.access_token).await;

    // Ending the others keeps the caller's own session, and nobody else's ends.
    let others = bearer(RevokeOtherSessionsRequest {}, &laptop.access_token);
    let ended = client.revoke_other_sessions(others).await.expect("ends the others").into_inner();
    assert_eq!(ended.revoked_count, 1, "the tablet's; the phone's had ended");
    let left = own_sessions(&mut client, &laptop.access_token, 0).await;
    assert_eq!(left.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [laptop_sid.as_str()]);
    client.get_me(bearer(GetMeRequest {}, &laptop.access_token)).await.expect("the laptop's session lives");
    client.get_me(bearer(GetMeRequest {}, &stranger.access_token)).await.expect("so does a stranger's");
    assert_eq!(listed(&mut client, None, 0).await, [phone_sid, tablet_sid]);
    running.stop().await;
}

async fn bad_listing_requests_name_their_field(db: Db) {
    let running = start(db).await;
    let mut client = running.client.clone();
    for (request, field) in [
        (ListRevokedSessionsRequest { page_token: "not-a-token".into(), ..Default::default() }, "page_token"),
        (ListRevokedSessionsRequest { page_size: -1, ..Default::default() }, "page_size"),
        (
            ListRevokedSessionsRequest {
                since: Some(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 }),
                ..Default::default()
            },
            "since",
        ),
    ] {
        let status = client.list_revoked_sessions(request).await.expect_err(field);
        assert_eq!((status.code(), violated_fields(&status)), (Code::InvalidArgument, vec![field.to_owned()]));
    }
    running.stop().await;
}

/// Sessions are listed a day, then forgotten (when the service starts, and hourly after).
async fn sessions_ended_over_a_day_ago_are_forgotten(db: Db) {
    let running = start(db.clone()).await;
    let mut client = running.client.clone();
    register(&mut client, EMAIL, PASSWORD, "Sam").await.expect("registers");
    for _ in 0..2 {
        let session = login(&mut client, EMAIL, PASSWORD).await.expect("logs in");
        client.logout(LogoutRequest { refresh_token: session.refresh_token }).await.expect("signs out");
    }
    let ended = listed(&mut client, None, 0).await;
    drop(client);
    running.stop().await;
    let day = 24 * 3600 * 1_000_000_i64;
    with_db!(&db, pool => {
        sqlx::query("UPDATE revoked_sessions SET revoke_time = $1 WHERE session_id = $2")
            .bind(platform::time::now_micros() - day - 60_000_000).bind(&ended[0])
            .execute(pool).await.expect("aged");
    });

    let running = start(db).await;
    let mut client = running.client.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while listed(&mut client, None, 0).await.len() > 1 {
        assert!(Instant::now() < deadline, "the session ended over a day ago is still listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed(&mut client, None, 0).await, ended[1..], "the one ended lately is kept");
    drop(client);
    running.stop().await;
}

/// Every way of ending one session, at the same moment: a spent refresh token presented again and again (the
/// family is revoked), a sign-out with its live one, and the owner ending it and every other session from a
/// second device. Each answers as if it came alone: never INTERNAL. On PostgreSQL these take the same rows in
/// different orders and the database aborts one to break the deadlock; such a transaction is run again.
async fn sign_outs_of_one_session_at_once_all_answer(db: Db) {
    let running = start(db).await;
    let mut client = running.client.clone();
    register(&mut client, EMAIL, PASSWORD, "Sam").await.expect("registers");
    let keeper = login(&mut client, EMAIL, PASSWORD).await.expect("signs in on a second device");
    for round in 0..8 {
        let session = login(&mut client, EMAIL, PASSWORD).await.expect("signs in");
        let sid = session_of(&mut client, &session.access_token).await;
        let live = refresh(&mut client, &session.refresh_token).await.expect("rotates");

        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..12 {
            let (mut client, spent) = (client.clone(), session.refresh_token.clone());
            calls.spawn(async move {
                let reused = refresh(&mut client, &spent).await.expect_err("a spent token");
                ("reuse", reused.code(), Code::Unauthenticated)
            });
        }
        let (mut logout_client, signing_out) = (client.clone(), live.clone());
        calls.spawn(async move {
            let outcome = logout_client.logout(LogoutRequest { refresh_token: signing_out }).await;
            ("logout", outcome.map_or_else(|s| s.code(), |_| Code::Ok), Code::Ok)
        });
        let (mut others_client, keeper_token) = (client.clone(), keeper.access_token.clone());
        calls.spawn(async move {
            let request = bearer(RevokeOtherSessionsRequest {}, &keeper_token);
            let outcome = others_client.revoke_other_sessions(request).await;
            ("revoke others", outcome.map_or_else(|s| s.code(), |_| Code::Ok), Code::Ok)
        });
        let (mut end_client, keeper_token) = (client.clone(), keeper.access_token.clone());
        calls.spawn(async move {
            let request = bearer(RevokeSessionRequest { id: sid }, &keeper_token);
            match end_client.revoke_session(request).await {
                // Ended by this call, or by another one first.
                Ok(_) => ("revoke session", Code::Ok, Code::Ok),
                Err(status) => ("revoke session", status.code(), Code::NotFound),
            }
        });
        while let Some(call) = calls.join_next().await {
            let (what, got, expected) = call.expect("the call's task");
            assert_eq!(got, expected, "round {round}: {what}");
        }
        let after = refresh(&mut client, &live).await.expect_err("the session ended");
        assert_eq!(after.code(), Code::Unauthenticated, "round {round}");
    }
    client.get_me(bearer(GetMeRequest {}, &keeper.access_token)).await.expect("the second device's session lives");
    running.stop().await;
}

on_both_backends!(
    every_way_a_session_ends_lists_it,
    owners_list_and_end_their_sessions,
    bad_listing_requests_name_their_field,
    sessions_ended_over_a_day_ago_are_forgotten,
    sign_outs_of_one_session_at_once_all_answer,
);
