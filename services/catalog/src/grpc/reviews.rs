//! `mercato.catalog.v1.ReviewService`: anyone reads a product's published reviews; a customer who bought it writes
//! one (`reviews:write`), changes or deletes their own; staff who edit the catalog read every product's (the lowest
//! rated, or those waiting for them when the shop moderates), publish and delete any.

use api::catalog::review_service_server::ReviewService;
use api::catalog::{
    CreateProductReviewRequest, CreateProductReviewResponse, DeleteProductReviewRequest, DeleteProductReviewResponse,
    GetProductReviewRequest, GetProductReviewResponse, ListProductReviewsRequest, ListProductReviewsResponse,
    ListReviewsRequest, ListReviewsResponse, ProductReview, PublishProductReviewRequest, PublishProductReviewResponse,
    RatingSummary, ReviewState, UpdateProductReviewRequest, UpdateProductReviewResponse,
};
use platform::auth::{caller, optional_caller};
use platform::config::ReviewModeration;
use platform::db::Db;
use platform::error::FieldViolation;
use platform::events::RelayHandle;
use platform::time::{now_micros, timestamp};
use tonic::{Request, Response, Status};

use super::{can_write, require};
use crate::domain::reviews::{self, ReviewFields};
use crate::error::Error;
use crate::store::{ProductRow, ReviewQuery, ReviewRow, Store};

/// Implements `mercato.catalog.v1.ReviewService`.
#[derive(Debug, Clone)]
pub struct ReviewsApi {
    store: Store,
    moderation: ReviewModeration,
    relay: RelayHandle,
}

impl ReviewsApi {
    /// The service over a migrated database, publishing reviews as written or holding them for staff (announced
    /// by `review.submitted`: `relay` is woken when one waits).
    pub fn new(db: Db, moderation: ReviewModeration, relay: RelayHandle) -> Self {
        Self { store: Store::new(db), moderation, relay }
    }

    /// Wakes the relay when `row` waits for staff: its `review.submitted` is in the outbox.
    fn announce_if_waiting(&self, row: &ReviewRow) {
        if !row.published {
            self.relay.wake();
        }
    }

    /// Product `id`: NOT_FOUND unless it exists and the caller may see it (inactive ones only staff).
    async fn visible(&self, id: &str, staff: bool) -> Result<ProductRow, Error> {
        match self.store.get_product(id).await? {
            Some(row) if row.active || staff => Ok(row),
            _ => Err(Error::product_not_found(id)),
        }
    }
}

fn review_to_wire(row: ReviewRow, caller: Option<&str>) -> ProductReview {
    ProductReview {
        mine: caller == Some(row.customer_id.as_str()),
        id: row.id,
        product_id: row.product_id,
        rating: row.rating,
        title: row.title,
        body: row.body,
        author_name: row.author_name,
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.update_time)),
        state: if row.published { ReviewState::Published } else { ReviewState::Pending }.into(),
    }
}

/// The `state` label of the reviews counter: whether customers see a review written.
fn state_label(published: bool) -> &'static str {
    if published { "published" } else { "pending" }
}

/// The listing's state filter: `Some(true)` only the published, `Some(false)` only those waiting, `None` all.
fn published_filter(state: i32) -> Result<Option<bool>, FieldViolation> {
    match ReviewState::try_from(state) {
        Ok(ReviewState::Unspecified) => Ok(None),
        Ok(ReviewState::Published) => Ok(Some(true)),
        Ok(ReviewState::Pending) => Ok(Some(false)),
        Err(_) => Err(FieldViolation::new("state", "must be REVIEW_STATE_PUBLISHED or REVIEW_STATE_PENDING, or unset")),
    }
}

fn fields_from_wire(review: ProductReview) -> ReviewFields {
    ReviewFields { rating: review.rating, title: review.title, body: review.body, author_name: review.author_name }
}

/// The summary of reviews that gave 1 to 5 stars `stars[0]` to `stars[4]` times.
fn summary(stars: [i64; 5]) -> RatingSummary {
    let count: i64 = stars.iter().sum();
    let sum: i64 = stars.iter().zip(1..).map(|(n, rating)| n * rating).sum();
    let narrow = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
    RatingSummary {
        count: narrow(count),
        average: reviews::average(count, sum),
        stars: stars.into_iter().map(narrow).collect(),
    }
}

#[tonic::async_trait]
impl ReviewService for ReviewsApi {
    async fn list_product_reviews(
        &self,
        request: Request<ListProductReviewsRequest>,
    ) -> Result<Response<ListProductReviewsResponse>, Status> {
        let staff = can_write(&request);
        let me = optional_caller(&request).map(|c| c.sub.clone());
        let req = request.into_inner();
        require("product_id", &req.product_id)?;
        let (limit, after) =
            platform::paging::id_page(req.page_size, &req.page_token).map_err(Error::InvalidArgument)?;
        let product = self.visible(&req.product_id, staff).await?;
        // A size of a T-shirt is reviewed as the T-shirt: the reviews of every product of its group.
        let group = self.store.group_members(&product).await?;
        // One row more than the page tells whether another page follows.
        let query =
            ReviewQuery { product_ids: Some(&group), max_rating: 0, published: Some(true), after, limit: limit + 1 };
        let rows = self.store.reviews(&query).await?;
        let (rows, next_page_token) = platform::paging::page(rows, limit, |last| last.id.clone());
        let stars = self.store.star_counts(&group).await?;
        Ok(Response::new(ListProductReviewsResponse {
            reviews: rows.into_iter().map(|row| review_to_wire(row, me.as_deref())).collect(),
            next_page_token,
            summary: Some(summary(stars)),
        }))
    }

    async fn list_reviews(
        &self,
        request: Request<ListReviewsRequest>,
    ) -> Result<Response<ListReviewsResponse>, Status> {
        let me = optional_caller(&request).map(|c| c.sub.clone());
        let req = request.into_inner();
        let page = platform::paging::id_page(req.page_size, &req.page_token);
        let filters = (reviews::check_max_rating(req.max_rating), published_filter(req.state));
        let (page, max_rating, published) = match (page, filters) {
            (Ok(page), (Ok(max_rating), Ok(published))) => (page, max_rating, published),
            (page, (max_rating, published)) => {
                let violations = page.err().into_iter().flatten().chain(max_rating.err()).chain(published.err());
                return Err(Error::InvalidArgument(violations.collect()).into());
            }
        };
        let (limit, after) = page;
        let query = ReviewQuery { product_ids: None, max_rating, published, after, limit: limit + 1 };
        let rows = self.store.reviews(&query).await?;
        let (rows, next_page_token) = platform::paging::page(rows, limit, |last| last.id.clone());
        Ok(Response::new(ListReviewsResponse {
            reviews: rows.into_iter().map(|row| review_to_wire(row, me.as_deref())).collect(),
            next_page_token,
        }))
    }

    async fn get_product_review(
        &self,
        request: Request<GetProductReviewRequest>,
    ) -> Result<Response<GetProductReviewResponse>, Status> {
        let staff = can_write(&request);
        let me = optional_caller(&request).map(|c| c.sub.clone());
        let req = request.into_inner();
        require("product_id", &req.product_id)?;
        require("review_id", &req.review_id)?;
        self.visible(&req.product_id, staff).await?;
        // One waiting for staff is seen by them and its author only; to anyone else it does not exist yet.
        let row = self
            .store
            .review(&req.product_id, &req.review_id)
            .await?
            .filter(|row| row.published || staff || me.as_deref() == Some(row.customer_id.as_str()))
            .ok_or_else(|| {
                Error::NotFound(format!("review {} of product {} not found", req.review_id, req.product_id))
            })?;
        Ok(Response::new(GetProductReviewResponse { review: Some(review_to_wire(row, me.as_deref())) }))
    }

    async fn create_product_review(
        &self,
        request: Request<CreateProductReviewRequest>,
    ) -> Result<Response<CreateProductReviewResponse>, Status> {
        let author = caller(&request)?.sub.clone();
        let req = request.into_inner();
        require("product_id", &req.product_id)?;
        let fields =
            reviews::validate(fields_from_wire(req.review.unwrap_or_default())).map_err(Error::InvalidArgument)?;
        let now = now_micros();
        let row = ReviewRow {
            id: uuid::Uuid::now_v7().to_string(),
            product_id: req.product_id,
            customer_id: author.clone(),
            rating: fields.rating,
            title: fields.title,
            body: fields.body,
            author_name: fields.author_name,
            create_time: now,
            update_time: now,
            published: reviews::published_when_written(self.moderation),
        };
        let row = self.store.create_review(&row).await?;
        self.announce_if_waiting(&row);
        metrics::counter!("mercato_reviews_written_total", "state" => state_label(row.published)).increment(1);
        tracing::info!(review_id = %row.id, product_id = %row.product_id, rating = row.rating, published = row.published, "review written");
        Ok(Response::new(CreateProductReviewResponse { review: Some(review_to_wire(row, Some(&author))) }))
    }

    async fn update_product_review(
        &self,
        request: Request<UpdateProductReviewRequest>,
    ) -> Result<Response<UpdateProductReviewResponse>, Status> {
        let author = caller(&request)?.sub.clone();
        let req = request.into_inner();
        require("product_id", &req.product_id)?;
        require("review_id", &req.review_id)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        platform::error::check_update_mask(&paths, reviews::UPDATABLE_PATHS).map_err(Error::InvalidArgument)?;
        let input = fields_from_wire(req.review.unwrap_or_default());
        let published = reviews::published_when_written(self.moderation);
        let row = self
            .store
            .update_review(&req.product_id, &req.review_id, &author, now_micros(), published, |current| {
                reviews::apply_update_mask(current, &input, &paths).map_err(Error::InvalidArgument)
            })
            .await?;
        self.announce_if_waiting(&row);
        Ok(Response::new(UpdateProductReviewResponse { review: Some(review_to_wire(row, Some(&author))) }))
    }

    async fn delete_product_review(
        &self,
        request: Request<DeleteProductReviewRequest>,
    ) -> Result<Response<DeleteProductReviewResponse>, Status> {
        let staff = can_write(&request);
        let me = caller(&request)?.sub.clone();
        let req = request.into_inner();
        require("product_id", &req.product_id)?;
        require("review_id", &req.review_id)?;
        // Staff moderate: any review. A customer: only their own (another's is not found, as for anyone else).
        let author = if staff { None } else { Some(me.as_str()) };
        let deleted = self.store.delete_review(&req.product_id, &req.review_id, author).await?;
        tracing::info!(review_id = %deleted.id, product_id = %deleted.product_id, by_author = deleted.customer_id == me, "review deleted");
        Ok(Response::new(DeleteProductReviewResponse {}))
    }

    async fn publish_product_review(
        &self,
        request: Request<PublishProductReviewRequest>,
    ) -> Result<Response<PublishProductReviewResponse>, Status> {
        let me = caller(&request)?.sub.clone();
        let req = request.into_inner();
        require("product_id", &req.product_id)?;
        require("review_id", &req.review_id)?;
        let row = self.store.publish_review(&req.product_id, &req.review_id, now_micros()).await?;
        tracing::info!(review_id = %row.id, product_id = %row.product_id, rating = row.rating, "review published");
        Ok(Response::new(PublishProductReviewResponse { review: Some(review_to_wire(row, Some(&me))) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_and_averages_the_stars() {
        let s = summary([1, 0, 0, 2, 3]);
        assert_eq!((s.count, s.average, s.stars), (6, 4.0, vec![1, 0, 0, 2, 3]));
        let none = summary([0; 5]);
        assert_eq!((none.count, none.average), (0, 0.0));
    }
}
