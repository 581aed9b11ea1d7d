//! The newsletter's methods of `SupportService`: anyone subscribes (double opt-in) and unsubscribes, staff
//! with `newsletter:send` send one to every confirmed subscriber.

use api::mercato::support::v1::{
    ConfirmNewsletterSubscriptionRequest, ConfirmNewsletterSubscriptionResponse, Newsletter, SendNewsletterRequest,
    SendNewsletterResponse, SubscribeNewsletterRequest, SubscribeNewsletterResponse, SubscriptionStatus,
    UnsubscribeNewsletterRequest, UnsubscribeNewsletterResponse,
};
use platform::auth::Claims;
use platform::time::{now_micros, timestamp};

use super::SupportApi;
use crate::domain::newsletter;
use crate::error::Error;
use crate::store::NewsletterRow;

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
        newsletter::check_token(&req.token).map_err(Error::invalid)?;
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
}
