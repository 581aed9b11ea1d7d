//! What the cart asks the catalog, over gRPC: what a product is and costs now, and how many units are in
//! stock. Both calls are open to anonymous callers, so the cart sends no token.
//!
//! The catalog hides inactive products from anonymous callers (GetProduct answers NOT_FOUND) but still
//! reports their stock, so a product whose GetProduct is NOT_FOUND while its GetInventory answers is one
//! the catalog knows and no longer sells ([`Offer::Inactive`]); if both are NOT_FOUND it is unknown.

use api::catalog::catalog_service_client::CatalogServiceClient;
use api::catalog::{GetInventoryRequest, GetProductRequest};
use futures::{StreamExt, TryStreamExt};
use platform::grpc::Channel;
use platform::grpc::TracedChannel;
use platform::telemetry::REQUEST_ID_HEADER;
use tonic::{Code, Request, Status};

use crate::domain::{Line, Listing, Offer, Price};
use crate::error::Error;

/// Most catalog lookups in flight for one cart (two calls each).
const CONCURRENCY: usize = 16;

/// A client of the catalog service.
#[derive(Debug, Clone)]
pub struct Catalog {
    client: CatalogServiceClient<TracedChannel>,
}

impl Catalog {
    /// A client over `channel` (see `platform::grpc::channel`).
    pub fn new(channel: Channel) -> Self {
        Self { client: CatalogServiceClient::new(TracedChannel::new(channel)) }
    }

    /// What the catalog says about `product_id` now. `request_id` is passed on, so the catalog's logs of
    /// these calls carry the request that caused them.
    pub async fn offer(&self, product_id: &str, request_id: Option<&str>) -> Result<Offer, Error> {
        let mut products = self.client.clone();
        let mut stock = self.client.clone();
        let (product, inventory) = tokio::join!(
            products.get_product(request(GetProductRequest { id: product_id.to_owned() }, request_id)),
            stock.get_inventory(request(GetInventoryRequest { product_id: product_id.to_owned() }, request_id)),
        );
        let in_stock = match inventory {
            Ok(response) => Some(response.into_inner().inventory.map_or(0, |i| i64::from(i.available))),
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => return Err(Error::Catalog(status)),
        };
        let product = match product {
            Ok(response) => response.into_inner().product,
            Err(status) if status.code() == Code::NotFound => {
                return Ok(if in_stock.is_some() { Offer::Inactive } else { Offer::Missing });
            }
            Err(status) => return Err(Error::Catalog(status)),
        };
        let Some(product) = product else {
            return Err(Error::Catalog(Status::internal("GetProduct answered without a product")));
        };
        let Some(price) = product.price.filter(|_| product.active) else {
            return Ok(Offer::Inactive);
        };
        Ok(Offer::OnSale(Listing {
            sku: product.sku,
            name: product.name,
            price: Price { currency: price.currency, amount_minor: price.amount_minor },
            // Deleted between our two calls: nothing to sell.
            in_stock: in_stock.unwrap_or(0),
        }))
    }

    /// The offers for every line, in the lines' order, looked up concurrently.
    pub async fn offers(&self, lines: &[Line], request_id: Option<&str>) -> Result<Vec<Offer>, Error> {
        self.offers_of(lines.iter().map(|line| line.product_id.as_str()), request_id).await
    }

    /// The offers for every product of `product_ids`, in their order, looked up concurrently.
    pub async fn offers_of<'a>(
        &self,
        product_ids: impl Iterator<Item = &'a str>,
        request_id: Option<&str>,
    ) -> Result<Vec<Offer>, Error> {
        // Each lookup owns what it needs: futures borrowing from the closure trip up `Send` inference.
        let lookups: Vec<_> = product_ids
            .map(|product_id| {
                let catalog = self.clone();
                let product_id = product_id.to_owned();
                let request_id = request_id.map(str::to_owned);
                async move { catalog.offer(&product_id, request_id.as_deref()).await }
            })
            .collect();
        futures::stream::iter(lookups).buffered(CONCURRENCY).try_collect().await
    }
}

fn request<T>(message: T, request_id: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = request_id.and_then(|id| id.parse().ok()) {
        request.metadata_mut().insert(REQUEST_ID_HEADER, value);
    }
    request
}
