//! The gRPC face of wishlists: `mercato.cart.v1.WishlistService`, the caller's own list only.

use api::mercato::cart::v1::wishlist_service_server::WishlistService;
use api::mercato::cart::v1::{
    AddWishlistItemRequest, AddWishlistItemResponse, ListWishlistItemsRequest, ListWishlistItemsResponse,
    RemoveWishlistItemRequest, RemoveWishlistItemResponse, WishlistItem,
};
use platform::db::Db;
use platform::grpc::Channel;
use platform::time::{now_micros, timestamp};
use tonic::{Request, Response, Status};

use crate::catalog::Catalog;
use crate::domain::{self, Offer};
use crate::error::Error;
use crate::grpc::{customer, money};
use crate::store::Store;
use crate::wishlist::{self, WishedItem};
use crate::wishlist_store::NewSavedItem;

/// Implements `mercato.cart.v1.WishlistService`.
#[derive(Debug, Clone)]
pub struct WishlistApi {
    store: Store,
    catalog: Catalog,
}

impl WishlistApi {
    /// The service over the cart's migrated database, showing products as the catalog behind `catalog` sells them.
    pub fn new(db: Db, catalog: Channel) -> Self {
        Self { store: Store::new(db), catalog: Catalog::new(catalog) }
    }
}

fn item_to_wire(item: WishedItem) -> WishlistItem {
    WishlistItem {
        product_id: item.product_id,
        sku: item.sku,
        name: item.name,
        for_sale: item.price.is_some(),
        price: item.price.map(money),
        available: i32::try_from(item.available).unwrap_or(i32::MAX),
        create_time: Some(timestamp(item.create_time)),
    }
}

#[tonic::async_trait]
impl WishlistService for WishlistApi {
    async fn list_wishlist_items(
        &self,
        request: Request<ListWishlistItemsRequest>,
    ) -> Result<Response<ListWishlistItemsResponse>, Status> {
        let (customer_id, request_id) = customer(&request)?;
        let saved = self.store.wishlist(&customer_id).await?;
        let offers = self.catalog.offers_of(saved.iter().map(|s| s.product_id.as_str()), request_id.as_deref()).await?;
        let items = saved.into_iter().zip(offers).map(|(s, offer)| item_to_wire(wishlist::shown(s, offer))).collect();
        Ok(Response::new(ListWishlistItemsResponse { items }))
    }

    async fn add_wishlist_item(
        &self,
        request: Request<AddWishlistItemRequest>,
    ) -> Result<Response<AddWishlistItemResponse>, Status> {
        let (customer_id, request_id) = customer(&request)?;
        let product_id = request.into_inner().product_id;
        domain::validate_product_id(&product_id).map_err(Error::invalid)?;
        let offer = self.catalog.offer(&product_id, request_id.as_deref()).await?;
        let listing = match &offer {
            Offer::OnSale(listing) => listing,
            Offer::Inactive => return Err(Error::product_inactive(&product_id).into()),
            Offer::Missing => return Err(Error::product_not_found(&product_id).into()),
        };
        let new = NewSavedItem { product_id: &product_id, sku: &listing.sku, name: &listing.name };
        let saved = self.store.save(&customer_id, &new, now_micros()).await?;
        tracing::info!(customer_id = %customer_id, product_id = %product_id, "saved on the wishlist");
        Ok(Response::new(AddWishlistItemResponse { item: Some(item_to_wire(wishlist::shown(saved, offer))) }))
    }

    async fn remove_wishlist_item(
        &self,
        request: Request<RemoveWishlistItemRequest>,
    ) -> Result<Response<RemoveWishlistItemResponse>, Status> {
        let (customer_id, _) = customer(&request)?;
        let product_id = request.into_inner().product_id;
        domain::validate_product_id(&product_id).map_err(Error::invalid)?;
        self.store.unsave(&customer_id, &product_id).await?;
        Ok(Response::new(RemoveWishlistItemResponse {}))
    }
}
