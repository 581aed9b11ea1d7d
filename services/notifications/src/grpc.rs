//! The gRPC face of the notifications service: the delivery log and the webhook endpoints.

use std::sync::Arc;

use api::mercato::notifications::v1::notification_service_server::NotificationService;
use api::mercato::notifications::v1::{
    CreateWebhookEndpointRequest, CreateWebhookEndpointResponse, DeleteWebhookEndpointRequest,
    DeleteWebhookEndpointResponse, ListNotificationsRequest, ListNotificationsResponse, ListWebhookEndpointsRequest,
    ListWebhookEndpointsResponse, Notification, NotificationChannel, NotificationStatus, WebhookEndpoint,
};
use platform::auth::caller;
use platform::error::FieldViolation;
use platform::time::{now_micros, timestamp};
use tonic::{Request, Response, Status};

use crate::domain::{self, Channel, Cursor};
use crate::error::Error;
use crate::store::{EndpointRow, ListQuery, NotificationRow, Store};
use crate::subscriptions::Subscriptions;

/// The scope that shows every notification (and their errors) and manages webhook endpoints.
pub const NOTIFICATIONS_ADMIN: &str = "notifications:admin";

/// Implements `mercato.notifications.v1.NotificationService`.
#[derive(Debug, Clone)]
pub struct NotificationsApi {
    store: Store,
    subscriptions: Arc<Subscriptions>,
}

impl NotificationsApi {
    /// The service over a migrated database; `subscriptions` is read again after each change of endpoints.
    pub fn new(store: Store, subscriptions: Arc<Subscriptions>) -> Self {
        Self { store, subscriptions }
    }
}

fn status_to_wire(stored: &str) -> NotificationStatus {
    match domain::Status::parse(stored) {
        Some(domain::Status::Pending) => NotificationStatus::Pending,
        Some(domain::Status::Sent) => NotificationStatus::Sent,
        Some(domain::Status::Failed) => NotificationStatus::Failed,
        Some(domain::Status::Skipped) => NotificationStatus::Skipped,
        Some(domain::Status::Logged) => NotificationStatus::Logged,
        None => NotificationStatus::Unspecified,
    }
}

fn status_from_wire(wire: i32) -> Result<Option<domain::Status>, FieldViolation> {
    match NotificationStatus::try_from(wire) {
        Ok(NotificationStatus::Unspecified) => Ok(None),
        Ok(NotificationStatus::Pending) => Ok(Some(domain::Status::Pending)),
        Ok(NotificationStatus::Sent) => Ok(Some(domain::Status::Sent)),
        Ok(NotificationStatus::Failed) => Ok(Some(domain::Status::Failed)),
        Ok(NotificationStatus::Skipped) => Ok(Some(domain::Status::Skipped)),
        Ok(NotificationStatus::Logged) => Ok(Some(domain::Status::Logged)),
        Err(_) => Err(FieldViolation::new("status", format!("{wire} is not a notification status"))),
    }
}

fn notification_to_wire(row: NotificationRow, admin: bool) -> Notification {
    let channel = match Channel::parse(&row.channel) {
        Some(Channel::Email) => NotificationChannel::Email,
        Some(Channel::Webhook) => NotificationChannel::Webhook,
        None => NotificationChannel::Unspecified,
    };
    Notification {
        status: status_to_wire(&row.status) as i32,
        id: row.id,
        user_id: row.user_id,
        channel: channel as i32,
        event_type: row.event_type,
        event_id: row.event_id,
        recipient: row.recipient,
        subject: row.subject,
        attempts: row.attempts,
        // Errors may quote servers and endpoints: operators' business, not customers'.
        last_error: if admin { row.last_error } else { String::new() },
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.update_time)),
    }
}

fn endpoint_to_wire(row: EndpointRow) -> WebhookEndpoint {
    WebhookEndpoint {
        id: row.id,
        url: row.url,
        event_types: row.event_types.split(' ').filter(|t| !t.is_empty()).map(str::to_owned).collect(),
        create_time: Some(timestamp(row.create_time)),
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationsApi {
    async fn list_notifications(
        &self,
        request: Request<ListNotificationsRequest>,
    ) -> Result<Response<ListNotificationsResponse>, Status> {
        let claims = caller(&request)?;
        let (sub, admin) = (claims.sub.clone(), claims.has_scope(NOTIFICATIONS_ADMIN));
        let req = request.into_inner();
        let mut violations = Vec::new();
        let limit = domain::page_size(req.page_size).unwrap_or_else(|v| {
            violations.push(v);
            domain::DEFAULT_PAGE_SIZE
        });
        let after = Cursor::decode(&req.page_token).unwrap_or_else(|v| {
            violations.push(v);
            None
        });
        let status = status_from_wire(req.status).unwrap_or_else(|v| {
            violations.push(v);
            None
        });
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        let user_id = domain::list_target(&sub, admin, &req.user_id)
            .map_err(|v| Error::PermissionDenied(format!("{}: {}", v.field, v.description)))?;
        // One row more than the page tells whether another page follows.
        let rows = self.store.list(&ListQuery { user_id, status, after, limit: limit + 1 }).await?;
        let (rows, next_page_token) =
            platform::paging::page(rows, limit, |last| Cursor { key: last.create_time, id: last.id.clone() }.encode());
        Ok(Response::new(ListNotificationsResponse {
            notifications: rows.into_iter().map(|row| notification_to_wire(row, admin)).collect(),
            next_page_token,
        }))
    }

    async fn create_webhook_endpoint(
        &self,
        request: Request<CreateWebhookEndpointRequest>,
    ) -> Result<Response<CreateWebhookEndpointResponse>, Status> {
        let by = caller(&request)?.sub.clone();
        let req = request.into_inner();
        let mut violations: Vec<FieldViolation> = domain::validate_webhook_url(&req.url).err().into_iter().collect();
        violations.extend(domain::validate_event_types(&req.event_types));
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        let id = uuid::Uuid::now_v7().to_string();
        let secret = domain::new_webhook_secret();
        let row = self.store.create_endpoint(&id, &req.url, &req.event_types, &secret, now_micros()).await?;
        // The consumer lets no event of the new types go by from now on.
        self.subscriptions.refresh(&self.store).await;
        tracing::info!(endpoint_id = %id, url = %req.url, by = %by, "webhook endpoint created");
        Ok(Response::new(CreateWebhookEndpointResponse { webhook_endpoint: Some(endpoint_to_wire(row)), secret }))
    }

    async fn list_webhook_endpoints(
        &self,
        _request: Request<ListWebhookEndpointsRequest>,
    ) -> Result<Response<ListWebhookEndpointsResponse>, Status> {
        let rows = self.store.endpoints().await?;
        Ok(Response::new(ListWebhookEndpointsResponse {
            webhook_endpoints: rows.into_iter().map(endpoint_to_wire).collect(),
        }))
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<DeleteWebhookEndpointRequest>,
    ) -> Result<Response<DeleteWebhookEndpointResponse>, Status> {
        let by = caller(&request)?.sub.clone();
        let id = request.into_inner().id;
        if id.is_empty() {
            return Err(Error::invalid(FieldViolation::new("id", "is required")).into());
        }
        if !self.store.delete_endpoint(&id, now_micros()).await? {
            return Err(Error::NotFound(format!("webhook endpoint {id} not found")).into());
        }
        self.subscriptions.refresh(&self.store).await;
        tracing::info!(endpoint_id = %id, by = %by, "webhook endpoint deleted");
        Ok(Response::new(DeleteWebhookEndpointResponse {}))
    }
}
