//! Email through a real SMTP server: aiosmtpd, started by the test with the python named by
//! `MERCATO_TEST_AIOSMTPD_PYTHON` (skipped when unset, except under `CI=true`). On SQLite and (when
//! `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL.

mod common;

use api::common::Money;
use api::mercato::auth::v1::{
    EmailChangeConfirmed, EmailChangeRequested, EmailChanged, EmailVerificationRequested, PasswordChangeMethod,
    PasswordChanged, PasswordResetRequested, UserDisabled, UserEnabled, UserRolesChanged,
};
use api::mercato::catalog::v1::{InventoryLow, ReviewSubmitted};
use api::mercato::deliveries::v1::{ShipmentDelivered, ShipmentShipped};
use api::mercato::notifications::v1::{Notification, NotificationChannel, NotificationStatus};
use api::mercato::orders::v1::{ReturnApproved, ReturnRequested};
use api::mercato::refunds::v1::RefundFailed;
use api::mercato::support::v1::{NewsletterIssued, NewsletterSubscriptionRequested, TicketCreated, TicketReplied};
use common::{Service, SmtpServer, confirmed, envelope, fast_retries, free_port, registered, smtp_python};
use notifications::domain::parse_smtp_url;
use notifications::{DispatchOptions, Mailer};
use platform::db::Db;

fn mailer(port: u16) -> Mailer {
    let config = parse_smtp_url(&format!("smtp://127.0.0.1:{port}")).expect("smtp url");
    Mailer::smtp(&config, "Mercato Shop <shop@mercato.test>".parse().expect("mailbox")).expect("mailer")
}

/// A mail server (aiosmtpd) and the service mailing it.
struct Mailing {
    smtp: SmtpServer,
    service: Service,
    /// Where the server writes what it receives; removed when dropped.
    dir: platform::testkit::TempDir,
}

/// The service with `options`, mailing a server started for the test; `None` when no aiosmtpd is at hand.
async fn mailing(db: Db, options: DispatchOptions) -> Option<Mailing> {
    let python = smtp_python()?;
    let dir = platform::testkit::TempDir::new("maildir").expect("temp dir");
    let port = free_port();
    let smtp = SmtpServer::start(&python, port, dir.path()).await;
    let service = Service::start(db, mailer(port), options).await;
    Some(Mailing { smtp, service, dir })
}

fn email_sent(all: &[api::mercato::notifications::v1::Notification], event_type: &str) -> bool {
    all.iter().any(|n| {
        n.event_type == event_type
            && n.channel == NotificationChannel::Email as i32
            && n.status == NotificationStatus::Sent as i32
    })
}

async fn emails_carry_text_and_escaped_html(db: Db) {
    let Some(Mailing { smtp, service, dir: _dir }) = mailing(db, fast_retries()).await else { return };

    service.deliver(&registered("u-eve", "eve@example.com", "<script>alert(1)</script> Eve", "de")).await;
    service.deliver(&confirmed("o-7", "u-eve", "pay-7")).await;
    let all = service
        .wait_until("both mails are sent", |all| {
            email_sent(all, "order.confirmed") && email_sent(all, "user.registered")
        })
        .await;
    assert!(all.iter().all(|n| n.attempts == 1), "{all:#?}");

    let messages = smtp.messages();
    assert_eq!(messages.len(), 2, "{messages:#?}");
    // Each mail's Message-ID is its notification's (the same on every attempt), at the sender's domain.
    let mut ids: Vec<String> = messages.iter().filter_map(|m| m["message_id"].as_str().map(str::to_owned)).collect();
    let mut expected: Vec<String> = all
        .iter()
        .filter(|n| n.channel == NotificationChannel::Email as i32)
        .map(|n| format!("<{}@mercato.test>", n.id))
        .collect();
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected);
    assert!(messages.iter().all(|m| m["auto_submitted"] == "auto-generated"), "{messages:#?}");
    let order = messages
        .iter()
        .find(|m| m["subject"] == "Ihre Bestellung o-7 ist bestätigt")
        .unwrap_or_else(|| panic!("the order mail, in German: {messages:#?}"));
    assert_eq!(order["to"], "eve@example.com");
    assert_eq!(order["from"], "Mercato Shop <shop@mercato.test>");
    let text = order["text"].as_str().expect("a text part");
    assert!(text.contains("Hallo <script>alert(1)</script> Eve,"), "{text}");
    assert!(text.contains("- 2 x Coffee: EUR 29.00") && text.contains("Gesamt: EUR 29.00"), "{text}");
    let html = order["html"].as_str().expect("an HTML part");
    assert!(html.contains("<p>Hallo &lt;script&gt;alert(1)&lt;&#x2f;script&gt; Eve,</p>"), "{html}");
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("<td>Coffee</td><td>EUR 29.00</td>"), "{html}");
    let mut sent = 0;
    for _ in 0..100 {
        sent = service.published.lock().expect("lock").iter().filter(|e| e.r#type == "notification.sent").count();
        if sent >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(sent, 2, "one notification.sent per mail");
    service.stop().await;
}

async fn a_server_down_at_first_gets_the_mail_once_it_is_up(db: Db) {
    let Some(python) = smtp_python() else { return };
    let dir = platform::testkit::TempDir::new("maildir").expect("temp dir");
    let port = free_port();
    // Room for the server's start-up within the attempts.
    let options = DispatchOptions { max_attempts: 10, ..fast_retries() };
    let service = Service::start(db, mailer(port), options).await;

    service.deliver(&registered("u-ada", "ada@example.com", "Ada", "en")).await;
    let all = service
        .wait_until("a first attempt failed", |all| {
            all.iter().any(|n| n.attempts >= 1 && n.status == NotificationStatus::Pending as i32)
        })
        .await;
    assert!(!all[0].last_error.is_empty(), "the admin sees why: {all:#?}");

    let smtp = SmtpServer::start(&python, port, dir.path()).await;
    let all = service.wait_until("the mail is sent", |all| email_sent(all, "user.registered")).await;
    assert!(all[0].attempts >= 2, "sent on a retry: {all:#?}");
    assert_eq!(all[0].last_error, "");
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "delivered once: {messages:#?}");
    assert_eq!(messages[0]["subject"], "Welcome to Mercato, Ada");
    assert_eq!(messages[0]["to"], "ada@example.com");
    service.stop().await;
}

async fn shipments_mail_the_customer_the_tracking_number_then_the_delivery(db: Db) {
    let Some(Mailing { smtp, service, dir: _dir }) = mailing(db, fast_retries()).await else { return };

    service.deliver(&registered("u-ada", "ada@example.com", "Ada", "en-GB")).await;
    let shipped = ShipmentShipped {
        shipment_id: "s-1".into(),
        order_id: "o-1".into(),
        customer_id: "u-ada".into(),
        carrier: "DHL".into(),
        tracking_number: "JJD0001".into(),
    };
    service.deliver(&envelope("shipment.shipped", "s-1", &shipped)).await;
    let delivered =
        ShipmentDelivered { shipment_id: "s-1".into(), order_id: "o-1".into(), customer_id: "u-ada".into() };
    service.deliver(&envelope("shipment.delivered", "s-1", &delivered)).await;
    service
        .wait_until("both shipment mails are sent", |all| {
            email_sent(all, "shipment.shipped") && email_sent(all, "shipment.delivered")
        })
        .await;

    let messages = smtp.messages();
    let mail = |subject: &str| {
        messages
            .iter()
            .find(|m| m["subject"] == subject)
            .unwrap_or_else(|| panic!("a mail {subject:?} among {messages:#?}"))
            .clone()
    };
    let on_its_way = mail("Your order o-1 is on its way");
    assert_eq!(on_its_way["to"], "ada@example.com");
    let text = on_its_way["text"].as_str().expect("a text part");
    assert!(text.contains("with DHL") && text.contains("tracking number is JJD0001"), "{text}");
    assert!(on_its_way["html"].as_str().expect("an HTML part").contains("<strong>JJD0001</strong>"));
    let arrived = mail("Your order o-1 was delivered");
    assert_eq!(arrived["to"], "ada@example.com");
    service.stop().await;
}

async fn an_approved_return_tells_the_customer_where_to_send_it(db: Db) {
    let address = vec!["Mercato Returns".to_owned(), "Lagerstraße 1".to_owned(), "10115 Berlin".to_owned()];
    let options = DispatchOptions { return_address: address, ..fast_retries() };
    let Some(Mailing { smtp, service, dir: _dir }) = mailing(db, options).await else { return };
    service.deliver(&registered("u-ada", "ada@example.com", "Ada", "en")).await;
    let approved = ReturnApproved { return_id: "rt-1".into(), order_id: "o-1".into(), customer_id: "u-ada".into() };
    service.deliver(&envelope("return.approved", "rt-1", &approved)).await;
    service.wait_until("the approval is mailed", |all| email_sent(all, "return.approved")).await;
    let messages = smtp.messages();
    let approval = |m: &&serde_json::Value| m["subject"] == "Your return is approved: please send the items back";
    let mail = messages.iter().find(approval).unwrap_or_else(|| panic!("the approval among {messages:#?}"));
    let text = mail["text"].as_str().expect("text");
    assert!(text.contains("Send them to:\n\nMercato Returns\nLagerstraße 1\n10115 Berlin\n"), "{text}");
    service.stop().await;
}

async fn an_agents_answer_reaches_a_contact_form_sender_by_mail(db: Db) {
    let Some(Mailing { smtp, service, dir: _dir }) = mailing(db, fast_retries()).await else { return };

    // No account: the address and name come with the event.
    let replied = TicketReplied {
        ticket_id: "t-1".into(),
        customer_id: String::new(),
        email: "grace@example.com".into(),
        subject: "Do you ship to Norway?".into(),
        body: "Yes, within five days.".into(),
        name: "Grace".into(),
    };
    service.deliver(&envelope("ticket.replied", "t-1", &replied)).await;
    service.wait_until("the answer is sent", |all| email_sent(all, "ticket.replied")).await;
    let messages = smtp.messages();
    let mail = messages.iter().find(|m| m["subject"] == "Re: Do you ship to Norway?").expect("the answer");
    assert_eq!(mail["to"], "grace@example.com");
    let text = mail["text"].as_str().expect("a text part");
    assert!(text.contains("Hello Grace,") && text.contains("Yes, within five days.") && text.contains("t-1"), "{text}");
    service.stop().await;
}

async fn newsletter_mails_carry_the_confirmation_and_the_way_out(db: Db) {
    let Some(Mailing { smtp, service, dir: _dir }) =
        mailing(db, DispatchOptions { public_api_url: Some("https://api.shop.test".into()), ..fast_retries() }).await
    else {
        return;
    };

    let requested = NewsletterSubscriptionRequested {
        email: "lena@example.com".into(),
        token: "confirm-token-1".into(),
        locale: "de-AT".into(),
    };
    service.deliver(&envelope("newsletter.subscription_requested", "s-1", &requested)).await;
    let issued = NewsletterIssued {
        newsletter_id: "n-1".into(),
        email: "max@example.com".into(),
        locale: String::new(),
        subject: "Spring sale".into(),
        body: "Ten percent off <everything>.".into(),
        unsubscribe_token: "leave-token-2".into(),
    };
    service.deliver(&envelope("newsletter.issued", "n-1", &issued)).await;
    service
        .wait_until("both are sent", |all| {
            email_sent(all, "newsletter.subscription_requested") && email_sent(all, "newsletter.issued")
        })
        .await;
    let messages = smtp.messages();
    let confirm = messages
        .iter()
        .find(|m| m["subject"] == "Bitte bestätigen Sie Ihr Newsletter-Abonnement")
        .unwrap_or_else(|| panic!("the confirmation, in German: {messages:#?}"));
    assert_eq!(confirm["to"], "lena@example.com");
    assert!(confirm["text"].as_str().expect("text").contains("confirm-token-1"), "{confirm:#?}");
    assert!(confirm["list_unsubscribe"].is_null(), "a confirmation is no bulk mail: {confirm:#?}");
    let newsletter = messages.iter().find(|m| m["subject"] == "Spring sale").expect("the newsletter");
    assert_eq!(newsletter["to"], "max@example.com");
    let text = newsletter["text"].as_str().expect("text");
    assert!(text.contains("Ten percent off <everything>.") && text.contains("leave-token-2"), "{text}");
    let html = newsletter["html"].as_str().expect("html");
    assert!(html.contains("&lt;everything&gt;") && html.contains("leave-token-2"), "{html}");
    // A mail client's own "unsubscribe", one click through the gateway (RFC 2369, RFC 8058).
    assert_eq!(
        newsletter["list_unsubscribe"],
        "<https://api.shop.test/v1/newsletter/tokens/leave-token-2:unsubscribe>"
    );
    assert_eq!(newsletter["list_unsubscribe_post"], "List-Unsubscribe=One-Click");
    assert_eq!(newsletter["list_id"], "<newsletter.mercato.test>", "the list, under the sender's domain");
    assert!(confirm["list_id"].is_null(), "{confirm:#?}");
    service.stop().await;
}

async fn password_mails_go_to_the_accounts_own_address(db: Db) {
    let Some(Mailing { smtp, service, dir: _dir }) =
        mailing(db, DispatchOptions { storefront_url: Some("https://shop.example.com".into()), ..fast_retries() })
            .await
    else {
        return;
    };

    let reset = PasswordResetRequested {
        user_id: "u-7".into(),
        email: "nora@example.com".into(),
        display_name: "Nora".into(),
        locale: "de".into(),
        token: "reset-token-7".into(),
        expire_time: None,
    };
    service.deliver(&envelope("user.password_reset_requested", "u-7", &reset)).await;
    let changed = PasswordChanged {
        user_id: "u-7".into(),
        email: "nora@example.com".into(),
        display_name: "Nora".into(),
        locale: String::new(),
        method: PasswordChangeMethod::Reset.into(),
        change_time: None,
    };
    service.deliver(&envelope("user.password_changed", "u-7", &changed)).await;
    let verify = EmailVerificationRequested {
        user_id: "u-7".into(),
        email: "nora@example.com".into(),
        display_name: "Nora".into(),
        locale: "en".into(),
        token: "verify-token-7".into(),
        expire_time: None,
    };
    service.deliver(&envelope("user.email_verification_requested", "u-7", &verify)).await;
    service
        .wait_until("all three are sent", |all| {
            email_sent(all, "user.password_reset_requested")
                && email_sent(all, "user.password_changed")
                && email_sent(all, "user.email_verification_requested")
        })
        .await;
    let messages = smtp.messages();
    let code =
        messages.iter().find(|m| m["subject"] == "Ihr Code für ein neues Passwort").expect("the code, in German");
    assert_eq!(code["to"], "nora@example.com");
    assert!(code["text"].as_str().expect("text").contains("reset-token-7"), "{code:#?}");
    assert!(code["html"].as_str().expect("html").contains("<code>reset-token-7</code>"), "{code:#?}");
    let link = "https://shop.example.com/reset-password?token=reset-token-7";
    assert!(code["text"].as_str().expect("text").contains(link), "the storefront's page: {code:#?}");
    let notice = messages.iter().find(|m| m["subject"] == "Your Mercato password was changed").expect("the notice");
    assert_eq!(notice["to"], "nora@example.com");
    let text = notice["text"].as_str().expect("text");
    assert!(text.contains("Hello Nora,") && text.contains("with a code mailed to this address"), "{text}");
    assert!(!text.contains("reset-token-7"), "the notice carries no secret");
    let verification = messages.iter().find(|m| m["subject"] == "Confirm your email address").expect("the code");
    assert_eq!(verification["to"], "nora@example.com");
    let text = verification["text"].as_str().expect("text");
    assert!(text.contains("https://shop.example.com/verify-email?token=verify-token-7"), "{text}");
    assert!(text.contains("nora@example.com is your address"), "{text}");
    service.stop().await;
}

async fn an_email_change_mails_the_new_address_its_code_then_tells_the_old_one(db: Db) {
    let Some(Mailing { smtp, service, dir: _dir }) =
        mailing(db, DispatchOptions { storefront_url: Some("https://shop.example.com".into()), ..fast_retries() })
            .await
    else {
        return;
    };
    service.deliver(&registered("u-8", "olga@example.com", "Olga", "en")).await;

    let requested = EmailChangeRequested {
        user_id: "u-8".into(),
        email: "olga@example.org".into(),
        display_name: "Olga".into(),
        locale: "en".into(),
        token: "change-token-8".into(),
        expire_time: None,
        current_email: "olga@example.com".into(),
    };
    service.deliver(&envelope("user.email_change_requested", "u-8", &requested)).await;
    let changed = EmailChanged {
        user_id: "u-8".into(),
        email: "olga@example.org".into(),
        display_name: "Olga".into(),
        locale: "en".into(),
        previous_email: "olga@example.com".into(),
        change_time: None,
        changed_by: String::new(),
    };
    service.deliver(&envelope("user.email_changed", "u-8", &changed)).await;
    let told = EmailChangeConfirmed {
        user_id: "u-8".into(),
        previous_email: "olga@example.com".into(),
        email: "olga@example.org".into(),
        display_name: "Olga".into(),
        locale: "en".into(),
        token: "revert-token-8".into(),
        expire_time: None,
        change_time: None,
    };
    service.deliver(&envelope("user.email_change_confirmed", "u-8", &told)).await;
    // Mails about the account go to the new address from now on.
    service.deliver(&confirmed("o-8", "u-8", "pay-8")).await;
    service
        .wait_until("the code, the notice and the order's mail are sent", |all| {
            email_sent(all, "user.email_change_requested")
                && email_sent(all, "user.email_change_confirmed")
                && email_sent(all, "order.confirmed")
        })
        .await;
    let messages = smtp.messages();
    let code = messages.iter().find(|m| m["subject"] == "Confirm your new email address").expect("the code");
    assert_eq!(code["to"], "olga@example.org", "to the new mailbox, which the code proves");
    let text = code["text"].as_str().expect("text");
    assert!(text.contains("https://shop.example.com/change-email?token=change-token-8"), "{text}");
    assert!(text.contains("from olga@example.com to this address, olga@example.org"), "{text}");
    let notice = messages
        .iter()
        .find(|m| m["subject"] == "The email address of your Mercato account was changed")
        .expect("the notice");
    assert_eq!(notice["to"], "olga@example.com", "to the address the account left");
    let text = notice["text"].as_str().expect("text");
    assert!(text.contains("to olga@example.org") && !text.contains("change-token-8"), "{text}");
    assert!(text.contains("https://shop.example.com/revert-email-change?token=revert-token-8"), "the way back: {text}");
    let order = messages.iter().find(|m| m["subject"] == "Your order o-8 is confirmed").expect("the order's mail");
    assert_eq!(order["to"], "olga@example.org");
    service.stop().await;
}

async fn staff_changes_to_an_account_are_mailed_to_its_owner(db: Db) {
    let Some(Mailing { smtp, service, dir: _dir }) = mailing(db, fast_retries()).await else { return };

    let changed = UserRolesChanged {
        user_id: "u-8".into(),
        email: "olga@example.com".into(),
        display_name: "Olga".into(),
        locale: "de".into(),
        roles: vec!["customer".into(), "catalog".into()],
        previous_roles: vec!["customer".into(), "support".into()],
        changed_by: "u-admin".into(),
        change_time: None,
    };
    service.deliver(&envelope("user.roles_changed", "u-8", &changed)).await;
    let disabled = UserDisabled {
        user_id: "u-9".into(),
        email: "pia@example.com".into(),
        display_name: "Pia".into(),
        locale: "en".into(),
        disabled_by: "u-admin".into(),
        disable_time: None,
    };
    service.deliver(&envelope("user.disabled", "u-9", &disabled)).await;
    let enabled = UserEnabled {
        user_id: "u-9".into(),
        email: "pia@example.com".into(),
        display_name: "Pia".into(),
        locale: "en".into(),
        enabled_by: "u-admin".into(),
        enable_time: None,
    };
    service.deliver(&envelope("user.enabled", "u-9", &enabled)).await;
    service
        .wait_until("all three are sent", |all| {
            ["user.roles_changed", "user.disabled", "user.enabled"].iter().all(|t| email_sent(all, t))
        })
        .await;
    let messages = smtp.messages();
    let roles = messages
        .iter()
        .find(|m| m["subject"] == "Ihre Rollen bei Mercato wurden geändert")
        .unwrap_or_else(|| panic!("the roles, in German: {messages:#?}"));
    assert_eq!(roles["to"], "olga@example.com");
    let text = roles["text"].as_str().expect("text");
    assert!(
        text.contains("Hallo Olga,") && text.contains("jetzt: Kunde, Katalog (vorher: Kunde, Kundendienst)"),
        "{text}"
    );
    let off = messages.iter().find(|m| m["subject"] == "Your Mercato account was disabled").expect("disabled");
    let on = messages.iter().find(|m| m["subject"] == "Your Mercato account is enabled again").expect("enabled");
    assert_eq!((&off["to"], &on["to"]), (&serde_json::json!("pia@example.com"), &serde_json::json!("pia@example.com")));
    assert!(off["text"].as_str().expect("text").contains("you cannot sign in"), "{off:#?}");
    service.stop().await;
}

/// The shop's inbox (`MERCATO_SUPPORT_EMAIL`) hears of every new ticket, every product running low and every
/// refused refund.
async fn new_tickets_low_stock_refused_refunds_and_waiting_reviews_are_announced_to_the_shops_inbox(db: Db) {
    let Some(Mailing { smtp, service, dir: _dir }) =
        mailing(db, DispatchOptions { support_inbox: Some("Help Desk <help@shop.example>".into()), ..fast_retries() })
            .await
    else {
        return;
    };

    let created = TicketCreated {
        ticket_id: "t-9".into(),
        customer_id: String::new(),
        email: "grace@example.com".into(),
        subject: "Norway?".into(),
        message: "Do you ship to Norway?".into(),
        name: "Grace".into(),
    };
    service.deliver(&envelope("ticket.created", "t-9", &created)).await;
    let low = InventoryLow {
        product_id: "p-7".into(),
        available: 3,
        threshold: 5,
        sku: "TEA-7".into(),
        name: "Sencha".into(),
    };
    service.deliver(&envelope("inventory.low", "p-7", &low)).await;
    let refused = RefundFailed {
        refund_id: "r-4".into(),
        payment_id: "pay-4".into(),
        amount: Some(Money { currency: "EUR".into(), amount_minor: 1250 }),
        reason: "arrived broken".into(),
        failure_reason: "the card account is closed".into(),
    };
    service.deliver(&envelope("refund.failed", "r-4", &refused)).await;
    let waiting = ReviewSubmitted {
        review_id: "rv-2".into(),
        product_id: "p-7".into(),
        product_name: "Sencha".into(),
        customer_id: "u-ada".into(),
        rating: 2,
        title: "Too grassy".into(),
        body: "Not for me.".into(),
        author_name: "Ada".into(),
    };
    service.deliver(&envelope("review.submitted", "rv-2", &waiting)).await;
    let asked = ReturnRequested { return_id: "rt-1".into(), order_id: "o-3".into(), ..Default::default() };
    service.deliver(&envelope("return.requested", "rt-1", &asked)).await;
    service.deliver(&registered("u-hal", "hal@example.com", "Hal", "en")).await;
    service.wait_until("the inbox is told", |all| email_sent(all, "ticket.created")).await;
    service.wait_until("the inbox is told of the stock", |all| email_sent(all, "inventory.low")).await;
    service.wait_until("the inbox is told of the refusal", |all| email_sent(all, "refund.failed")).await;
    service.wait_until("the inbox is told of the review", |all| email_sent(all, "review.submitted")).await;
    service.wait_until("the inbox is told of the return", |all| email_sent(all, "return.requested")).await;
    service.wait_until("the customer is welcomed", |all| email_sent(all, "user.registered")).await;
    let messages = smtp.messages();
    let mail = messages.iter().find(|m| m["subject"] == "New ticket: Norway?").expect("the announcement");
    assert_eq!(mail["to"], "Help Desk <help@shop.example>");
    assert!(mail["reply_to"].is_null(), "the inbox is not pointed at itself: {mail:#?}");
    // A customer's answer to any mail from the no-reply sender reaches the inbox.
    let welcome = messages.iter().find(|m| m["to"] == "hal@example.com").expect("the welcome");
    assert_eq!(welcome["reply_to"], "Help Desk <help@shop.example>");
    let text = mail["text"].as_str().expect("text");
    assert!(text.contains("Hello Help Desk,") && text.contains("Grace <grace@example.com>"), "{text}");
    assert!(text.contains("Do you ship to Norway?") && text.contains("t-9"), "{text}");

    // A product running low is the shop's business too: what it is, how many are left, where to restock.
    let stock = messages.iter().find(|m| m["subject"] == "Low stock: Sencha (TEA-7), 3 left").expect("low stock");
    assert_eq!(stock["to"], "Help Desk <help@shop.example>");
    assert!(stock["reply_to"].is_null(), "the inbox is not pointed at itself: {stock:#?}");
    let text = stock["text"].as_str().expect("text");
    assert!(text.contains("3 available, below the threshold of 5"), "{text}");
    assert!(text.contains("POST /v1/products/p-7/inventory:adjust"), "{text}");

    // So is a refund the processor refused: nothing was given back, and someone has to find another way.
    let subject = "Refund refused: EUR 12.50 from payment pay-4";
    let refusal = messages.iter().find(|m| m["subject"] == subject).expect("the refusal");
    assert_eq!(refusal["to"], "Help Desk <help@shop.example>");
    assert!(refusal["reply_to"].is_null(), "the inbox is not pointed at itself: {refusal:#?}");
    let text = refusal["text"].as_str().expect("text");
    assert!(text.contains("r-4") && text.contains("refused: the card account is closed"), "{text}");
    assert!(text.contains("It was asked for because: arrived broken"), "{text}");

    // And a review waiting to be published: what it says, and the calls that publish or delete it.
    let review = messages.iter().find(|m| m["subject"] == "Review to publish: Sencha, 2 of 5 stars").expect("review");
    assert_eq!(review["to"], "Help Desk <help@shop.example>");
    assert!(review["reply_to"].is_null(), "the inbox is not pointed at itself: {review:#?}");
    let text = review["text"].as_str().expect("text");
    assert!(text.contains("★★ Too grassy\nNot for me.\n— Ada (customer u-ada)"), "{text}");
    assert!(text.contains("POST /v1/products/p-7/reviews/rv-2:publish"), "{text}");
    let asked = messages.iter().find(|m| m["text"].as_str().is_some_and(|t| t.contains("rt-1"))).expect("return");
    assert!(asked["reply_to"].is_null(), "the inbox is not pointed at itself: {asked:#?}");
    service.stop().await;
}

async fn without_a_support_inbox_the_shops_mails_are_skipped_saying_why(db: Db) {
    let service = Service::start(db, Mailer::Log, fast_retries()).await;
    let created = TicketCreated { ticket_id: "t-1".into(), customer_id: "u-1".into(), ..Default::default() };
    service.deliver(&envelope("ticket.created", "t-1", &created)).await;
    let low = InventoryLow { product_id: "p-1".into(), available: 0, threshold: 5, ..Default::default() };
    service.deliver(&envelope("inventory.low", "p-1", &low)).await;
    let refused = RefundFailed { refund_id: "r-1".into(), payment_id: "pay-1".into(), ..Default::default() };
    service.deliver(&envelope("refund.failed", "r-1", &refused)).await;
    let waiting = ReviewSubmitted { review_id: "rv-1".into(), rating: 5, ..Default::default() };
    service.deliver(&envelope("review.submitted", "rv-1", &waiting)).await;
    let to_the_shop = ["ticket.created", "inventory.low", "refund.failed", "review.submitted"];
    let recorded = |all: &[Notification]| to_the_shop.iter().all(|t| all.iter().any(|n| n.event_type == *t));
    let all = service.wait_until("recorded", recorded).await;
    for event_type in to_the_shop {
        let skipped = all.iter().find(|n| n.event_type == event_type).expect("recorded");
        assert_eq!(skipped.status, NotificationStatus::Skipped as i32, "{skipped:#?}");
        assert!(skipped.last_error.contains("MERCATO_SUPPORT_EMAIL"), "{skipped:#?}");
    }
    service.stop().await;
}

/// Runs each scenario once on SQLite and once on PostgreSQL.
macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (db, _dir) = platform::testkit::sqlite("notifications").await.expect("sqlite");
                    super::$scenario(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(db) = platform::testkit::postgres("notifications").await else { return };
                    super::$scenario(db).await;
                }
            )*
        }
    };
}

on_both_engines!(
    emails_carry_text_and_escaped_html,
    a_server_down_at_first_gets_the_mail_once_it_is_up,
    shipments_mail_the_customer_the_tracking_number_then_the_delivery,
    an_approved_return_tells_the_customer_where_to_send_it,
    an_agents_answer_reaches_a_contact_form_sender_by_mail,
    newsletter_mails_carry_the_confirmation_and_the_way_out,
    password_mails_go_to_the_accounts_own_address,
    an_email_change_mails_the_new_address_its_code_then_tells_the_old_one,
    staff_changes_to_an_account_are_mailed_to_its_owner,
    new_tickets_low_stock_refused_refunds_and_waiting_reviews_are_announced_to_the_shops_inbox,
    without_a_support_inbox_the_shops_mails_are_skipped_saying_why,
);
