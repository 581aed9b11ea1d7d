//! Helpers of the review scenarios (reviews.rs, variants.rs): buyers made from the orders' events the catalog
//! consumes, and the calls of `ReviewService`.

use api::catalog::{
    CreateProductReviewRequest, DeleteProductReviewRequest, GetProductReviewRequest, ListProductReviewsRequest,
    ListProductReviewsResponse, ProductReview, PublishProductReviewRequest, ReviewSubmitted,
    UpdateProductReviewRequest,
};
use api::mercato::orders::v1::{OrderCancelled, OrderConfirmed, OrderItem};
use platform::events::{EventBus, EventEnvelope};
use prost::Message;
use tonic::{Request, Status};

use super::{Server, with_token};

pub fn envelope(id: &str, kind: &str, subject: &str, payload: &impl Message) -> EventEnvelope {
    EventEnvelope {
        id: id.into(),
        source: "orders".into(),
        r#type: kind.into(),
        subject: subject.into(),
        data: payload.encode_to_vec(),
        ..EventEnvelope::default()
    }
}

pub fn lines(product_ids: &[&str]) -> Vec<OrderItem> {
    product_ids.iter().map(|id| OrderItem { product_id: (*id).into(), quantity: 1, ..OrderItem::default() }).collect()
}

impl Server {
    /// A customer's token, with the scope every customer has for reviews.
    pub fn shopper(&self, id: &str) -> String {
        self.issuer.token(id, &["cart:write", "reviews:write"], &["customer"])
    }

    /// Staff who edit the catalog (admins hold every customer scope too).
    pub fn editor(&self) -> String {
        self.issuer.token("admin-1", &["catalog:write", "reviews:write"], &["admin"])
    }

    /// Delivers `order.confirmed` of order `order_id`, placed by `customer` for `product_ids`.
    pub async fn confirmed(&self, order_id: &str, customer: &str, product_ids: &[&str]) {
        let payload = OrderConfirmed {
            order_id: order_id.into(),
            customer_id: customer.into(),
            items: lines(product_ids),
            ..OrderConfirmed::default()
        };
        let event = envelope(&format!("{order_id}-confirmed"), "order.confirmed", order_id, &payload);
        self.bus.publish(event).await.expect("taken");
    }

    /// Delivers `order.cancelled` of order `order_id`.
    pub async fn cancelled(&self, order_id: &str, customer: &str, product_ids: &[&str]) {
        let payload = OrderCancelled {
            order_id: order_id.into(),
            customer_id: customer.into(),
            items: lines(product_ids),
            ..OrderCancelled::default()
        };
        let event = envelope(&format!("{order_id}-cancelled"), "order.cancelled", order_id, &payload);
        self.bus.publish(event).await.expect("taken");
    }

    pub async fn review(
        &self,
        token: &str,
        product_id: &str,
        rating: i32,
        title: &str,
    ) -> Result<ProductReview, Status> {
        let review = ProductReview {
            rating,
            title: title.into(),
            body: format!("{title}, in a few words."),
            author_name: format!("{title} fan"),
            ..ProductReview::default()
        };
        let request =
            with_token(CreateProductReviewRequest { product_id: product_id.into(), review: Some(review) }, token);
        Ok(self.reviews.clone().create_product_review(request).await?.into_inner().review.expect("review"))
    }

    pub async fn reviews_of(
        &self,
        token: Option<&str>,
        product_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<ListProductReviewsResponse, Status> {
        let request =
            ListProductReviewsRequest { product_id: product_id.into(), page_size, page_token: page_token.into() };
        let request = match token {
            Some(token) => with_token(request, token),
            None => Request::new(request),
        };
        Ok(self.reviews.clone().list_product_reviews(request).await?.into_inner())
    }

    pub async fn change(
        &self,
        token: &str,
        product_id: &str,
        id: &str,
        review: ProductReview,
        paths: &[&str],
    ) -> Result<ProductReview, Status> {
        let request = UpdateProductReviewRequest {
            product_id: product_id.into(),
            review_id: id.into(),
            review: Some(review),
            update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
        };
        Ok(self
            .reviews
            .clone()
            .update_product_review(with_token(request, token))
            .await?
            .into_inner()
            .review
            .expect("review"))
    }

    pub async fn delete(&self, token: &str, product_id: &str, id: &str) -> Result<(), Status> {
        let request = DeleteProductReviewRequest { product_id: product_id.into(), review_id: id.into() };
        self.reviews.clone().delete_product_review(with_token(request, token)).await?;
        Ok(())
    }

    /// Staff publish a review that waits (`PublishProductReview`).
    pub async fn publish(&self, token: &str, product_id: &str, id: &str) -> Result<ProductReview, Status> {
        let request = PublishProductReviewRequest { product_id: product_id.into(), review_id: id.into() };
        let published = self.reviews.clone().publish_product_review(with_token(request, token)).await?;
        Ok(published.into_inner().review.expect("review"))
    }

    /// One review as `token` (or an anonymous caller) reads it.
    pub async fn review_as(&self, token: Option<&str>, product_id: &str, id: &str) -> Result<ProductReview, Status> {
        let request = GetProductReviewRequest { product_id: product_id.into(), review_id: id.into() };
        let request = match token {
            Some(token) => with_token(request, token),
            None => Request::new(request),
        };
        Ok(self.reviews.clone().get_product_review(request).await?.into_inner().review.expect("review"))
    }

    /// The reviews announced by `review.submitted` so far (waiting for staff), once there are at least `count`
    /// (waiting up to two seconds for the relay).
    pub async fn submitted(&self, count: usize) -> Vec<ReviewSubmitted> {
        let within = std::time::Duration::from_secs(2);
        self.published_at_least(catalog::events::REVIEW_SUBMITTED, count, within).await
    }

    /// A product's rating as GetProduct shows it: (count, average).
    pub async fn rating(&self, product_id: &str) -> (i32, f64) {
        let rating = self.get(product_id, None).await.expect("product").rating.expect("rating");
        (rating.count, rating.average)
    }
}
