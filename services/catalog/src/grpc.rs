//! The gRPC face of the catalog: wire messages in, domain rules, store, wire messages out. Products, images and
//! stock are served here; categories in [`categories`], the restocking list in [`stock`]; customers' reviews
//! (`ReviewService`, a service of its own) in [`reviews`]; back-in-stock alerts (`StockAlertService`) in [`alerts`];
//! the products of a variant group each product shows in [`variants`].

pub mod alerts;
mod categories;
pub mod reviews;
mod stock;
mod variants;

use api::catalog::catalog_service_server::CatalogService;
use api::catalog::{
    AddProductImageRequest, AddProductImageResponse, AdjustInventoryRequest, AdjustInventoryResponse,
    CommitStockRequest, CommitStockResponse, CreateCategoryRequest, CreateCategoryResponse, CreateProductRequest,
    CreateProductResponse, DeleteCategoryRequest, DeleteCategoryResponse, DeleteProductImageRequest,
    DeleteProductImageResponse, GetInventoryRequest, GetInventoryResponse, GetProductImageContentRequest,
    GetProductRequest, GetProductResponse, Inventory, ListCategoriesRequest, ListCategoriesResponse,
    ListProductsRequest, ListProductsResponse, ListStockLevelsRequest, ListStockLevelsResponse, Product, ProductImage,
    ProductOption as WireOption, RatingSummary, ReleaseStockRequest, ReleaseStockResponse, ReserveStockRequest,
    ReserveStockResponse, TaxClass as WireTaxClass, UpdateCategoryRequest, UpdateCategoryResponse,
    UpdateProductRequest, UpdateProductResponse,
};
use api::common::Money;
use api::google::api::HttpBody;
use api::mercato::options::v1::HttpBodyHeaders;
use platform::auth::{caller, optional_caller};
use platform::blob::Blobs;
use platform::db::Db;
use platform::error::FieldViolation;
use platform::events::RelayHandle;
use platform::time::{now_micros, timestamp};
use tonic::{Request, Response, Status};

use crate::domain::images;
use crate::domain::{
    self, Cursor, Price, ProductInput, ProductOption, ProductOrder, ReservationStatus, Stock, TaxClass, listing,
};
use crate::error::Error;
use crate::store::{ImageRow, ListQuery, ProductRow, Store};

/// The scope that lets a caller manage products and see inactive ones.
pub const CATALOG_WRITE: &str = "catalog:write";

/// Implements `mercato.catalog.v1.CatalogService`.
#[derive(Debug, Clone)]
pub struct CatalogApi {
    store: Store,
    blobs: Blobs,
    relay: RelayHandle,
}

impl CatalogApi {
    /// The service over a migrated database and the blob store of its images; `relay` is woken when events
    /// were written.
    pub fn new(db: Db, blobs: Blobs, relay: RelayHandle) -> Self {
        Self { store: Store::new(db), blobs, relay }
    }

    /// `rows` as the wire shows them, each with its images (one query for them all).
    async fn with_images(&self, rows: Vec<ProductRow>) -> Result<Vec<Product>, Error> {
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let mut images = self.store.images_of(&ids).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let of_row = images.remove(&row.id).unwrap_or_default();
                Product { images: of_row.into_iter().map(image_to_wire).collect(), ..product_to_wire(row) }
            })
            .collect())
    }

    /// One product as the wire shows it, with its images.
    async fn one_with_images(&self, row: ProductRow) -> Result<Product, Error> {
        let images = self.store.images_of_product(&row.id).await?;
        Ok(Product { images: images.into_iter().map(image_to_wire).collect(), ..product_to_wire(row) })
    }
}

pub(crate) fn image_to_wire(row: ImageRow) -> ProductImage {
    ProductImage {
        uri: images::image_uri(&row.product_id, &row.id),
        id: row.id,
        content_type: row.content_type,
        size_bytes: row.size_bytes,
        alt_text: row.alt_text,
        create_time: Some(timestamp(row.create_time)),
    }
}

/// A stored product as the wire (and the events) show it, without its images ([`CatalogApi::with_images`]).
pub(crate) fn product_to_wire(row: ProductRow) -> Product {
    let options = options_to_wire(row.options());
    Product {
        id: row.id,
        sku: row.sku,
        name: row.name,
        description: row.description,
        price: Some(Money { currency: row.price_currency, amount_minor: row.price_amount_minor }),
        category: row.category,
        active: row.active,
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.update_time)),
        images: Vec::new(),
        rating: Some(RatingSummary {
            count: i32::try_from(row.rating_count).unwrap_or(i32::MAX),
            average: domain::reviews::average(row.rating_count, row.rating_sum),
            stars: Vec::new(),
        }),
        tax_class: match TaxClass::parse(&row.tax_class) {
            TaxClass::Standard => WireTaxClass::Standard as i32,
            TaxClass::Reduced => WireTaxClass::Reduced as i32,
        },
        variant_of: row.variant_of.unwrap_or_default(),
        options,
        variants: Vec::new(),
    }
}

pub(crate) fn options_to_wire(options: Vec<ProductOption>) -> Vec<WireOption> {
    options.into_iter().map(|o| WireOption { name: o.name, value: o.value }).collect()
}

fn product_from_wire(product: Product) -> ProductInput {
    ProductInput {
        sku: product.sku,
        name: product.name,
        description: product.description,
        price: product.price.map(|m| Price { currency: m.currency, amount_minor: m.amount_minor }),
        category: product.category,
        active: product.active,
        tax_class: match WireTaxClass::try_from(product.tax_class) {
            Ok(WireTaxClass::Unspecified | WireTaxClass::Standard) => Some(TaxClass::Standard),
            Ok(WireTaxClass::Reduced) => Some(TaxClass::Reduced),
            Err(_) => None,
        },
        variant_of: product.variant_of,
        options: product.options.into_iter().map(|o| ProductOption { name: o.name, value: o.value }).collect(),
    }
}

fn inventory_to_wire(product_id: String, stock: Stock) -> Inventory {
    // Stored counts are kept within int32 by the adjust rules; saturate rather than wrap all the same.
    let narrow = |n: i64| i32::try_from(n).unwrap_or(if n < 0 { i32::MIN } else { i32::MAX });
    Inventory {
        product_id,
        on_hand: narrow(stock.on_hand),
        reserved: narrow(stock.reserved),
        available: narrow(stock.available()),
    }
}

fn status_to_wire(status: ReservationStatus) -> i32 {
    let wire = match status {
        ReservationStatus::Held => api::catalog::ReservationStatus::Held,
        ReservationStatus::Released => api::catalog::ReservationStatus::Released,
        ReservationStatus::Committed => api::catalog::ReservationStatus::Committed,
    };
    wire as i32
}

fn require(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(FieldViolation::new(field, "is required")));
    }
    Ok(())
}

fn can_write<T>(request: &Request<T>) -> bool {
    optional_caller(request).is_some_and(|c| c.has_scope(CATALOG_WRITE))
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        let writer = can_write(&request);
        let req = request.into_inner();
        if req.include_inactive && !writer {
            return Err(Error::PermissionDenied(format!("include_inactive needs the scope {CATALOG_WRITE}")).into());
        }
        let mut violations = Vec::new();
        let size = domain::page_size(req.page_size).unwrap_or_else(|v| {
            violations.push(v);
            domain::DEFAULT_PAGE_SIZE
        });
        let order = ProductOrder::parse(&req.order_by).unwrap_or_else(|v| {
            violations.push(v);
            ProductOrder::NEWEST
        });
        let after = Cursor::decode(&req.page_token, order).unwrap_or_else(|v| {
            violations.push(v);
            None
        });
        if let Err(v) = domain::validate_query(&req.query) {
            violations.push(v);
        }
        let (min_price, max_price) =
            listing::price_bounds(req.min_price_minor, req.max_price_minor).unwrap_or_else(|v| {
                violations.extend(v);
                (None, None)
            });
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        // One row more than the page tells whether another page follows.
        let rows = self
            .store
            .list_products(&ListQuery {
                include_inactive: req.include_inactive,
                include_variants: req.include_variants,
                category: req.category,
                pattern: platform::db::like_pattern(&req.query),
                min_price,
                max_price,
                order,
                after,
                limit: size + 1,
            })
            .await?;
        let (rows, next_page_token) = platform::paging::page(rows, size, |(_, cursor)| cursor.encode());
        let rows = rows.into_iter().map(|(row, _)| row).collect();
        let mut products = self.with_images(rows).await?;
        self.with_variants(&mut products, writer).await?;
        Ok(Response::new(ListProductsResponse { products, next_page_token }))
    }

    async fn get_product(&self, request: Request<GetProductRequest>) -> Result<Response<GetProductResponse>, Status> {
        let writer = can_write(&request);
        let id = request.into_inner().id;
        require("id", &id)?;
        match self.store.product_with_images(&id).await? {
            // Inactive products do not exist for customers.
            Some((row, images)) if row.active || writer => {
                let mut product =
                    Product { images: images.into_iter().map(image_to_wire).collect(), ..product_to_wire(row) };
                self.with_variants(std::slice::from_mut(&mut product), writer).await?;
                Ok(Response::new(GetProductResponse { product: Some(product) }))
            }
            _ => Err(Error::product_not_found(&id).into()),
        }
    }

    async fn create_product(
        &self,
        request: Request<CreateProductRequest>,
    ) -> Result<Response<CreateProductResponse>, Status> {
        let Some(product) = request.into_inner().product else {
            return Err(Error::invalid(FieldViolation::new("product", "is required")).into());
        };
        let fields = domain::validate_product(product_from_wire(product)).map_err(Error::InvalidArgument)?;
        let id = uuid::Uuid::now_v7().to_string();
        let row = self.store.create_product(&id, fields, now_micros()).await?;
        self.relay.wake();
        tracing::info!(product_id = %row.id, sku = %row.sku, variant_of = ?row.variant_of, "product created");
        let mut product = product_to_wire(row);
        self.with_variants(std::slice::from_mut(&mut product), true).await?;
        Ok(Response::new(CreateProductResponse { product: Some(product) }))
    }

    async fn update_product(
        &self,
        request: Request<UpdateProductRequest>,
    ) -> Result<Response<UpdateProductResponse>, Status> {
        let req = request.into_inner();
        require("id", &req.id)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        domain::check_update_mask(&paths).map_err(Error::InvalidArgument)?;
        let input = product_from_wire(req.product.unwrap_or_default());
        let row = self
            .store
            .update_product(&req.id, now_micros(), |current| {
                domain::apply_update_mask(current, &input, &paths).map_err(Error::InvalidArgument)
            })
            .await?;
        self.relay.wake();
        let mut product = self.one_with_images(row).await?;
        self.with_variants(std::slice::from_mut(&mut product), true).await?;
        Ok(Response::new(UpdateProductResponse { product: Some(product) }))
    }

    async fn get_inventory(
        &self,
        request: Request<GetInventoryRequest>,
    ) -> Result<Response<GetInventoryResponse>, Status> {
        let product_id = request.into_inner().product_id;
        require("product_id", &product_id)?;
        let stock = self.store.inventory(&product_id).await?.ok_or_else(|| Error::product_not_found(&product_id))?;
        Ok(Response::new(GetInventoryResponse { inventory: Some(inventory_to_wire(product_id, stock)) }))
    }

    async fn adjust_inventory(
        &self,
        request: Request<AdjustInventoryRequest>,
    ) -> Result<Response<AdjustInventoryResponse>, Status> {
        let actor = caller(&request)?.sub.clone();
        let req = request.into_inner();
        let mut violations = domain::validate_adjustment(req.delta, &req.reason).err().unwrap_or_default();
        if req.product_id.is_empty() {
            violations.insert(0, FieldViolation::new("product_id", "is required"));
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        let stock = self
            .store
            .adjust_inventory(&req.product_id, i64::from(req.delta), &req.reason, &actor, now_micros())
            .await?;
        self.relay.wake();
        tracing::info!(product_id = %req.product_id, delta = req.delta, reason = %req.reason, "inventory adjusted");
        Ok(Response::new(AdjustInventoryResponse { inventory: Some(inventory_to_wire(req.product_id, stock)) }))
    }

    async fn reserve_stock(
        &self,
        request: Request<ReserveStockRequest>,
    ) -> Result<Response<ReserveStockResponse>, Status> {
        let req = request.into_inner();
        let lines: Vec<(String, i32)> = req.items.into_iter().map(|i| (i.product_id, i.quantity)).collect();
        let items = domain::validate_reservation(&req.reservation_id, &lines).map_err(Error::InvalidArgument)?;
        let reserved = self.store.reserve(&req.reservation_id, &items, now_micros()).await?;
        // Most holds write no event (only one that takes the stock below the low-stock threshold does): waking the
        // relay after every hold made it read an empty outbox once per checkout.
        if reserved.wrote_events {
            self.relay.wake();
        }
        let status = status_to_wire(reserved.status);
        Ok(Response::new(ReserveStockResponse { reservation_id: req.reservation_id, status }))
    }

    async fn release_stock(
        &self,
        request: Request<ReleaseStockRequest>,
    ) -> Result<Response<ReleaseStockResponse>, Status> {
        let actor = caller(&request)?.sub.clone();
        let id = request.into_inner().reservation_id;
        domain::validate_reservation_id(&id).map_err(Error::invalid)?;
        self.store.settle(&id, ReservationStatus::Released, &actor, now_micros()).await?;
        self.relay.wake();
        Ok(Response::new(ReleaseStockResponse { status: status_to_wire(ReservationStatus::Released) }))
    }

    async fn commit_stock(
        &self,
        request: Request<CommitStockRequest>,
    ) -> Result<Response<CommitStockResponse>, Status> {
        let actor = caller(&request)?.sub.clone();
        let id = request.into_inner().reservation_id;
        domain::validate_reservation_id(&id).map_err(Error::invalid)?;
        self.store.settle(&id, ReservationStatus::Committed, &actor, now_micros()).await?;
        self.relay.wake();
        Ok(Response::new(CommitStockResponse { status: status_to_wire(ReservationStatus::Committed) }))
    }

    async fn list_stock_levels(
        &self,
        request: Request<ListStockLevelsRequest>,
    ) -> Result<Response<ListStockLevelsResponse>, Status> {
        Ok(Response::new(self.stock_levels(request.into_inner()).await?))
    }

    async fn list_categories(
        &self,
        _request: Request<ListCategoriesRequest>,
    ) -> Result<Response<ListCategoriesResponse>, Status> {
        Ok(Response::new(self.every_category().await?))
    }

    async fn create_category(
        &self,
        request: Request<CreateCategoryRequest>,
    ) -> Result<Response<CreateCategoryResponse>, Status> {
        Ok(Response::new(self.describe_category(request.into_inner()).await?))
    }

    async fn update_category(
        &self,
        request: Request<UpdateCategoryRequest>,
    ) -> Result<Response<UpdateCategoryResponse>, Status> {
        Ok(Response::new(self.redescribe_category(request.into_inner()).await?))
    }

    async fn delete_category(
        &self,
        request: Request<DeleteCategoryRequest>,
    ) -> Result<Response<DeleteCategoryResponse>, Status> {
        Ok(Response::new(self.undescribe_category(request.into_inner()).await?))
    }

    async fn add_product_image(
        &self,
        request: Request<AddProductImageRequest>,
    ) -> Result<Response<AddProductImageResponse>, Status> {
        let req = request.into_inner();
        let mut violations = Vec::new();
        if let Err(v) = platform::error::check_id("product_id", &req.product_id) {
            violations.push(v);
        }
        let image = images::validate_image(&req.content_type, &req.data, &req.alt_text)
            .map_err(|more| violations.extend(more))
            .ok();
        let Some(image) = image.filter(|_| violations.is_empty()) else {
            return Err(Error::InvalidArgument(violations).into());
        };
        let id = uuid::Uuid::now_v7().to_string();
        let key = images::blob_key(&req.product_id, &id);
        let size = i64::try_from(req.data.len()).unwrap_or(i64::MAX);
        // The bytes first, then the row that makes them part of the product; a refused row takes them back.
        self.blobs.put(&key, req.data.into()).await.map_err(Error::from)?;
        let row = match self.store.add_image(&id, &req.product_id, &image, size, now_micros()).await {
            Ok(row) => row,
            Err(error) => {
                if let Err(blob_error) = self.blobs.delete(&key).await {
                    tracing::warn!(%key, error = %blob_error, "an image's bytes stay behind its refused row");
                }
                return Err(error.into());
            }
        };
        tracing::info!(product_id = %row.product_id, image_id = %row.id, size, "product image added");
        Ok(Response::new(AddProductImageResponse { image: Some(image_to_wire(row)) }))
    }

    async fn delete_product_image(
        &self,
        request: Request<DeleteProductImageRequest>,
    ) -> Result<Response<DeleteProductImageResponse>, Status> {
        let req = request.into_inner();
        check_image_ids(&req.product_id, &req.image_id)?;
        if !self.store.delete_image(&req.product_id, &req.image_id, now_micros()).await? {
            return Err(Error::image_not_found(&req.product_id, &req.image_id).into());
        }
        // The row is gone, so the image is too; bytes that fail to go are only space.
        let key = images::blob_key(&req.product_id, &req.image_id);
        if let Err(error) = self.blobs.delete(&key).await {
            tracing::warn!(%key, %error, "a deleted image's bytes stay behind");
        }
        tracing::info!(product_id = %req.product_id, image_id = %req.image_id, "product image deleted");
        Ok(Response::new(DeleteProductImageResponse {}))
    }

    async fn get_product_image_content(
        &self,
        request: Request<GetProductImageContentRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let writer = can_write(&request);
        let req = request.into_inner();
        check_image_ids(&req.product_id, &req.image_id)?;
        let not_found = || Error::image_not_found(&req.product_id, &req.image_id);
        // An inactive product's images are as hidden as the product.
        let image = match self.store.image(&req.product_id, &req.image_id).await? {
            Some((image, active)) if active || writer => image,
            _ => return Err(not_found().into()),
        };
        let key = images::blob_key(&image.product_id, &image.id);
        let Some(data) = self.blobs.get(&key).await.map_err(Error::from)? else {
            tracing::error!(%key, "an image's bytes are missing from the blob store");
            return Err(not_found().into());
        };
        // An image's bytes never change under its id: caches keep it a day (its product may be hidden or the
        // image deleted meanwhile, so not for ever) and revalidate it by its ETag.
        let headers = HttpBodyHeaders {
            cache_control: "public, max-age=86400".to_owned(),
            etag: platform::media::etag(&image.id),
            ..Default::default()
        };
        Ok(Response::new(platform::media::http_body(image.content_type, data.to_vec(), &headers)))
    }
}

/// Checks the product and image ids of an image request.
fn check_image_ids(product_id: &str, image_id: &str) -> Result<(), Error> {
    platform::error::check_ids(&[("product_id", product_id), ("image_id", image_id)]).map_err(Error::InvalidArgument)
}
