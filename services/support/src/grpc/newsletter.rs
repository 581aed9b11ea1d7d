//! The newsletter's methods of `SupportService`: anyone subscribes (double opt-in) and unsubscribes, staff
//! with `newsletter:send` send one to every confirmed subscriber.

use api::mercato::support::v1::{
    ConfirmNewsletterSubscriptionRequest, ConfirmNewsletterSubscriptionResponse, DeleteNewsletterSubscriberRequest,
    DeleteNewsletterSubscriberResponse, GetNewsletterRequest, GetNewsletterResponse, ListNewsletterSubscribersRequest,
    ListNewsletterSubscribersResponse, ListNewslettersRequest, ListNewslettersResponse, Newsletter,
    NewsletterSubscriber, SendNewsletterRequest, SendNewsletterResponse, SubscribeNewsletterRequest,
    SubscribeNewsletterResponse, SubscriptionStatus, UnsubscribeNewsletterRequest, UnsubscribeNewsletterResponse,
};
use platform::auth::Claims;
use platform::error::{FieldViolation, check_id};
use platform::time::{now_micros, timestamp};

use super::SupportApi;
use crate::domain::newsletter::{self, Subscription};
use crate::domain::{self, Cursor};
use crate::error::Error;
use crate::store::{NewsletterRow, SubscriberRow};

fn status_to_wire(status: Subscription) -> SubscriptionStatus {
    match status {
        Subscription::Pending => SubscriptionStatus::Pending,
        Subscription::Confirmed => SubscriptionStatus::Confirmed,
        Subscription::Unsubscribed => SubscriptionStatus::Unsubscribed,
    }
}

/// The state a listing asks for: `None` for every state (unset).
fn status_filter(value: i32) -> Result<Option<Subscription>, FieldViolation> {
    match SubscriptionStatus::try_from(value) {
        Ok(SubscriptionStatus::Unspecified) => Ok(None),
        Ok(SubscriptionStatus::Pending) => Ok(Some(Subscription::Pending)),
        Ok(SubscriptionStatus::Confirmed) => Ok(Some(Subscription::Confirmed)),
        Ok(SubscriptionStatus::Unsubscribed) => Ok(Some(Subscription::Unsubscribed)),
        Err(_) => Err(FieldViolation::new("status", "is not a subscription state")),
    }
}

fn subscriber_to_wire(row: SubscriberRow) -> Result<NewsletterSubscriber, Error> {
    let status = Subscription::parse(&row.status)
        .ok_or_else(|| Error::Corrupt(format!("subscription status {:?}", row.status)))?;
    Ok(NewsletterSubscriber {
        email: row.email,
        status: status_to_wire(status).into(),
        locale: row.locale,
        request_time: Some(timestamp(row.request_time)),
        update_time: Some(timestamp(row.update_time)),
    })
}

fn newsletter_to_wire(n: NewsletterRow) -> Newsletter {
    Newsletter {
        id: n.id,
        subject: n.subject,
        body: n.body,
        recipient_count: n.recipient_count,
        create_time: Some(timestamp(n.create_time)),
    }
}

impl SupportApi {
    /// Asks for the newsletter at the address `req` gives; the answer says nothing about the address.
    pub(super) async fn subscribe(
        &self,
        req: SubscribeNewsletterRequest,
    ) -> Result<SubscribeNewsletterResponse, Error> {
        let email = newsletter::subscriber_email(&req.email);
        let locale = newsletter::locale(&req.locale);
        let (email, locale) = match (email, locale) {
            (Ok(email), Ok(locale)) => (email, locale),
            (email, locale) => {
                return Err(Error::InvalidArgument(email.err().into_iter().chain(locale.err()).collect()));
            }
        };
        if self.store.subscribe(&email, &locale, now_micros()).await? {
            self.relay.wake();
            tracing::info!("newsletter confirmation requested");
        }
        Ok(SubscribeNewsletterResponse {})
    }

    /// Confirms the subscription of the token `req` gives.
    pub(super) async fn confirm_subscription(
        &self,
        req: ConfirmNewsletterSubscriptionRequest,
    ) -> Result<ConfirmNewsletterSubscriptionResponse, Error> {
        newsletter::check_token(&req.token).map_err(Error::invalid)?;
        let email = self.store.confirm_subscription(&req.token, now_micros()).await?;
        Ok(ConfirmNewsletterSubscriptionResponse { email, status: SubscriptionStatus::Confirmed.into() })
    }

    /// Ends the subscription of the token `req` gives.
    pub(super) async fn unsubscribe(
        &self,
        req: UnsubscribeNewsletterRequest,
    ) -> Result<UnsubscribeNewsletterResponse, Error> {
        newsletter::check_unsubscribe(&req.token, &req.list_unsubscribe).map_err(Error::InvalidArgument)?;
        let email = self.store.unsubscribe(&req.token, now_micros()).await?;
        Ok(UnsubscribeNewsletterResponse { email, status: SubscriptionStatus::Unsubscribed.into() })
    }

    /// Sends the newsletter `req` holds to every confirmed subscriber, as `claims`.
    pub(super) async fn send_to_subscribers(
        &self,
        claims: &Claims,
        req: SendNewsletterRequest,
    ) -> Result<SendNewsletterResponse, Error> {
        let new = newsletter::newsletter(&req.subject, &req.body, &req.request_id).map_err(Error::InvalidArgument)?;
        let id = uuid::Uuid::now_v7().to_string();
        let sent = self.store.send_newsletter(&id, &new, &claims.sub, now_micros()).await?;
        if sent.id == id {
            self.relay.wake();
            tracing::info!(newsletter_id = %id, recipients = sent.recipient_count, "newsletter sent");
        }
        Ok(SendNewsletterResponse { newsletter: Some(newsletter_to_wire(sent)) })
    }

    /// A page of the newsletters sent, newest first.
    pub(super) async fn newsletters_sent(&self, req: ListNewslettersRequest) -> Result<ListNewslettersResponse, Error> {
        let mut violations = Vec::new();
        let limit = domain::page_size(req.page_size).map_err(|v| violations.push(v)).unwrap_or_default();
        let after = domain::parse_page_token(&req.page_token).map_err(|v| violations.push(v)).unwrap_or_default();
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        // One more than the page: whether there is a next page.
        let sent = self.store.newsletters(after.as_ref(), limit + 1).await?;
        let (sent, next_page_token) = platform::paging::page(sent, limit, |last| {
            domain::page_token(&Cursor { time: last.create_time, id: last.id.clone() })
        });
        Ok(ListNewslettersResponse { newsletters: sent.into_iter().map(newsletter_to_wire).collect(), next_page_token })
    }

    /// One newsletter sent.
    pub(super) async fn newsletter_sent(&self, req: GetNewsletterRequest) -> Result<GetNewsletterResponse, Error> {
        check_id("id", &req.id).map_err(Error::invalid)?;
        let sent = self.store.newsletter(&req.id).await?;
        let sent = sent.ok_or_else(|| Error::NotFound(format!("newsletter {} not found", req.id)))?;
        Ok(GetNewsletterResponse { newsletter: Some(newsletter_to_wire(sent)) })
    }

    /// A page of the addresses, by address.
    pub(super) async fn subscribers(
        &self,
        req: ListNewsletterSubscribersRequest,
    ) -> Result<ListNewsletterSubscribersResponse, Error> {
        let mut violations = Vec::new();
        let limit = domain::page_size(req.page_size).map_err(|v| violations.push(v)).unwrap_or_default();
        let after = newsletter::parse_subscriber_page_token(&req.page_token)
            .map_err(|v| violations.push(v))
            .unwrap_or_default();
        let status = status_filter(req.status).map_err(|v| violations.push(v)).unwrap_or_default();
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        let rows = self.store.subscribers(status, after.as_deref(), limit + 1).await?;
        let (rows, next_page_token) =
            platform::paging::page(rows, limit, |last| newsletter::subscriber_page_token(&last.email));
        let subscribers = rows.into_iter().map(subscriber_to_wire).collect::<Result<_, _>>()?;
        Ok(ListNewsletterSubscribersResponse { subscribers, next_page_token })
    }

    /// Forgets an address altogether, as `claims`.
    pub(super) async fn forget_subscriber(
        &self,
        claims: &Claims,
        req: DeleteNewsletterSubscriberRequest,
    ) -> Result<DeleteNewsletterSubscriberResponse, Error> {
        let email = newsletter::subscriber_email(&req.email).map_err(Error::invalid)?;
        if !self.store.delete_subscriber(&email).await? {
            return Err(Error::NotFound("no such address among the newsletter's".to_owned()));
        }
        // The address itself stays out of the logs: forgetting it is the point.
        tracing::info!(by = %claims.sub, "newsletter address forgotten");
        Ok(DeleteNewsletterSubscriberResponse {})
    }
}
