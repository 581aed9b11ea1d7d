//! The catalog over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL: each
//! scenario is an async fn taking a `Db`, run once per engine (the harness is in `harness/`).

use std::collections::HashSet;
use std::time::Duration;

use api::catalog::{
    AddProductImageRequest, AdjustInventoryRequest, CreateProductRequest, DeleteProductImageRequest,
    GetInventoryRequest, GetProductImageContentRequest, GetProductRequest, ListProductsRequest, Product, ProductImage,
    ReservationStatus, ReserveStockRequest, StockItem, TaxClass, UpdateProductRequest,
};
use api::catalog::{
    Category, CreateCategoryRequest, DeleteCategoryRequest, ListCategoriesRequest, UpdateCategoryRequest,
};
use api::catalog::{InventoryAdjusted, InventoryLow, ListStockLevelsRequest, ListStockLevelsResponse, ProductUpdated};
use api::common::Money;
use platform::db::Db;
use platform::events::{EventBus, EventEnvelope};
use prost::Message;
use tonic::{Code, Request, Status};

mod harness;

use harness::*;

const HELD: i32 = ReservationStatus::Held as i32;
const RELEASED: i32 = ReservationStatus::Released as i32;
const COMMITTED: i32 = ReservationStatus::Committed as i32;

async fn create_get_list_and_access(db: Db) {
    let server = Server::start(db).await;
    let mut sent = product("COF-ETH-250", "Ethiopia Yirgacheffe", "coffee", 1450);
    sent.id = "chosen-by-client".into();
    sent.create_time = Some(prost_types::Timestamp { seconds: 1, nanos: 0 });
    let created = server.create(sent).await;
    assert_ne!(created.id, "chosen-by-client");
    assert!(uuid::Uuid::parse_str(&created.id).is_ok(), "a UUID: {}", created.id);
    assert!(created.create_time.expect("time").seconds > 1_600_000_000);
    assert_eq!(created.create_time, created.update_time);
    assert_eq!(created.price, Some(Money { currency: "EUR".into(), amount_minor: 1450 }));

    let fetched = server.get(&created.id, None).await.expect("anonymous get");
    assert_eq!(fetched, created);
    let listed = server.list(ListProductsRequest::default(), None).await.expect("list");
    assert_eq!(listed.products, vec![created.clone()]);
    assert_eq!(listed.next_page_token, "");
    assert_eq!(stock(&server.inventory(&created.id).await), (0, 0, 0), "a new product has no stock");

    let mut client = server.client.clone();
    let duplicate = product("COF-ETH-250", "Another", "coffee", 100);
    let err = client
        .create_product(with_token(CreateProductRequest { product: Some(duplicate) }, &server.admin()))
        .await
        .expect_err("duplicate sku");
    assert_eq!(err.code(), Code::AlreadyExists);

    let mut invalid = product("has space", "", "Coffee Beans", -5);
    invalid.price = Some(Money { currency: "eur".into(), amount_minor: -5 });
    let err = client
        .create_product(with_token(CreateProductRequest { product: Some(invalid) }, &server.admin()))
        .await
        .expect_err("invalid product");
    assert_eq!(
        bad_fields(&err),
        ["product.sku", "product.name", "product.category", "product.price.currency", "product.price.amount_minor"]
    );
    let err = client
        .create_product(with_token(CreateProductRequest { product: None }, &server.admin()))
        .await
        .expect_err("no product");
    assert_eq!(bad_fields(&err), ["product"]);

    let anonymous = Request::new(CreateProductRequest { product: Some(product("X-1", "X", "coffee", 1)) });
    assert_eq!(client.create_product(anonymous).await.expect_err("anonymous").code(), Code::Unauthenticated);
    let customer =
        with_token(CreateProductRequest { product: Some(product("X-2", "X", "coffee", 1)) }, &server.customer());
    assert_eq!(client.create_product(customer).await.expect_err("customer").code(), Code::PermissionDenied);

    let missing = uuid::Uuid::now_v7().to_string();
    let err = server.get(&missing, None).await.expect_err("unknown id");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), format!("product {missing} not found"));
    assert_eq!(bad_fields(&server.get("", None).await.expect_err("empty id")), ["id"]);
    let listed = server.list(ListProductsRequest::default(), None).await.expect("list");
    assert_eq!(listed.products.len(), 1, "failed creates left nothing behind");
    server.stop().await;
}

async fn pagination_and_filters(db: Db) {
    let server = Server::start(db).await;
    for i in 0..25 {
        let category = if i % 2 == 0 { "tea" } else { "coffee" };
        let mut p = product(&format!("PAGE-{i:03}"), &format!("Product {i}"), category, 100 + i);
        if i == 7 {
            p.name = "Golden MONKEY".into();
        }
        if i == 8 {
            p.description = "100% arabica".into();
        }
        server.create(p).await;
    }

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut token = String::new();
    loop {
        let page = server
            .list(ListProductsRequest { page_size: 10, page_token: token.clone(), ..Default::default() }, None)
            .await
            .expect("page");
        sizes.push(page.products.len());
        seen.extend(page.products);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(sizes.len() < 5, "pagination does not end");
    }
    assert_eq!(sizes, [10, 10, 5]);
    let ids: HashSet<&str> = seen.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids.len(), 25, "no duplicates, no gaps");
    let skus: Vec<&str> = seen.iter().map(|p| p.sku.as_str()).collect();
    let newest_first: Vec<String> = (0..25).rev().map(|i| format!("PAGE-{i:03}")).collect();
    assert_eq!(skus, newest_first, "newest first");

    let all = server.list(ListProductsRequest::default(), None).await.expect("default size");
    assert_eq!(all.products.len(), 20, "default page size");
    let big = server.list(ListProductsRequest { page_size: 1000, ..Default::default() }, None).await.expect("clamped");
    assert_eq!((big.products.len(), big.next_page_token.as_str()), (25, ""));

    let tea = server
        .list(ListProductsRequest { category: "tea".into(), page_size: 100, ..Default::default() }, None)
        .await
        .expect("category");
    assert_eq!(tea.products.len(), 13);
    assert!(tea.products.iter().all(|p| p.category == "tea"));

    let query = |q: &str| ListProductsRequest { query: q.into(), page_size: 100, ..Default::default() };
    let monkey = server.list(query("monkey"), None).await.expect("query");
    assert_eq!(monkey.products.iter().map(|p| p.sku.as_str()).collect::<Vec<_>>(), ["PAGE-007"]);
    let by_sku = server.list(query("page-01"), None).await.expect("sku query");
    assert_eq!(by_sku.products.len(), 10, "PAGE-010 to PAGE-019");
    let percent = server.list(query("0%"), None).await.expect("literal percent");
    assert_eq!(percent.products.iter().map(|p| p.sku.as_str()).collect::<Vec<_>>(), ["PAGE-008"]);
    let underscore = server.list(query("_"), None).await.expect("literal underscore");
    assert!(underscore.products.is_empty(), "_ is not a wildcard");
    let paged_filter = server
        .list(ListProductsRequest { category: "coffee".into(), page_size: 5, ..Default::default() }, None)
        .await
        .expect("filtered page");
    let rest = server
        .list(
            ListProductsRequest {
                category: "coffee".into(),
                page_size: 100,
                page_token: paged_filter.next_page_token,
                ..Default::default()
            },
            None,
        )
        .await
        .expect("filtered rest");
    assert_eq!(paged_filter.products.len() + rest.products.len(), 12);

    let garbage = server
        .list(ListProductsRequest { page_token: "not-a-token!".into(), ..Default::default() }, None)
        .await
        .expect_err("garbage token");
    assert_eq!(bad_fields(&garbage), ["page_token"]);
    let negative =
        server.list(ListProductsRequest { page_size: -1, ..Default::default() }, None).await.expect_err("negative");
    assert_eq!(bad_fields(&negative), ["page_size"]);
    let inactive = ListProductsRequest { include_inactive: true, ..Default::default() };
    let denied = server.list(inactive.clone(), None).await.expect_err("anonymous include_inactive");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = server.list(inactive, Some(&server.customer())).await.expect_err("customer include_inactive");
    assert_eq!(denied.code(), Code::PermissionDenied);
    server.stop().await;
}

/// The first bytes of a PNG file: enough for the catalog to know it is one.
const PNG: &[u8] = b"\x89PNG\r\n\x1A\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01";

impl Server {
    async fn add_image(
        &self,
        token: &str,
        product_id: &str,
        content_type: &str,
        data: &[u8],
    ) -> Result<ProductImage, Status> {
        let request = AddProductImageRequest {
            product_id: product_id.into(),
            content_type: content_type.into(),
            data: data.to_vec(),
            alt_text: format!("{content_type} of {product_id}"),
        };
        Ok(self.client.clone().add_product_image(with_token(request, token)).await?.into_inner().image.expect("image"))
    }

    /// An image's bytes and type as anyone (no token) fetches them.
    async fn image_content(&self, product_id: &str, image_id: &str) -> Result<(String, Vec<u8>), Status> {
        let request = GetProductImageContentRequest { product_id: product_id.into(), image_id: image_id.into() };
        let body = self.client.clone().get_product_image_content(request).await?.into_inner();
        Ok((body.content_type, body.data))
    }

    async fn get_as(&self, token: Option<&str>, id: &str) -> Result<Product, Status> {
        let request = GetProductRequest { id: id.into() };
        let request = match token {
            Some(token) => with_token(request, token),
            None => Request::new(request),
        };
        Ok(self.client.clone().get_product(request).await?.into_inner().product.expect("product"))
    }
}

/// Every product of a listing, read a page of `page_size` at a time (the token of each page to the next).
async fn all_pages(server: &Server, request: ListProductsRequest) -> Vec<Product> {
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..20 {
        let page = ListProductsRequest { page_token: token, ..request.clone() };
        let page = server.list(page, None).await.expect("page");
        seen.extend(page.products);
        token = page.next_page_token;
        if token.is_empty() {
            return seen;
        }
    }
    panic!("pagination does not end");
}

async fn sorted_by_price_or_name_and_bounded_by_price(db: Db) {
    let server = Server::start(db).await;
    // Names in mixed case, and prices that tie across a page boundary (ties go by id, in the direction listed).
    let made = [("Darjeeling", 450), ("assam", 300), ("Ceylon", 450), ("bancha", 120), ("Earl grey", 900)];
    for (i, (name, cents)) in made.into_iter().enumerate() {
        server.create(product(&format!("SORT-{i}"), name, "tea", cents)).await;
    }
    let names = |products: &[Product]| products.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    let by = |order_by: &str| ListProductsRequest { order_by: order_by.into(), page_size: 3, ..Default::default() };

    assert_eq!(names(&all_pages(&server, by("name")).await), ["assam", "bancha", "Ceylon", "Darjeeling", "Earl grey"]);
    assert_eq!(
        names(&all_pages(&server, by("name desc")).await),
        ["Earl grey", "Darjeeling", "Ceylon", "bancha", "assam"]
    );
    let cheapest = all_pages(&server, by("price")).await;
    let prices: Vec<i64> = cheapest.iter().filter_map(|p| p.price.as_ref().map(|m| m.amount_minor)).collect();
    assert_eq!(prices, [120, 300, 450, 450, 900]);
    assert!(cheapest[2].id < cheapest[3].id, "a tie goes by id");
    let dearest = all_pages(&server, by("price desc")).await;
    assert_eq!(
        dearest.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        cheapest.iter().rev().map(|p| p.id.clone()).collect::<Vec<_>>()
    );
    assert_eq!(names(&all_pages(&server, by("create_time")).await), made.map(|(name, _)| name.to_owned()));

    let bounded = ListProductsRequest { min_price_minor: 300, max_price_minor: 450, ..by("price") };
    assert_eq!(names(&all_pages(&server, bounded).await), ["assam", "Darjeeling", "Ceylon"]);
    let from = ListProductsRequest { min_price_minor: 450, ..by("name") };
    assert_eq!(names(&all_pages(&server, from).await), ["Ceylon", "Darjeeling", "Earl grey"]);

    // A token is for its own order; bad orders and bounds are named.
    let first = server.list(by("price"), None).await.expect("page");
    let mixed = ListProductsRequest { page_token: first.next_page_token, ..by("name") };
    assert_eq!(bad_fields(&server.list(mixed, None).await.expect_err("another order")), ["page_token"]);
    let bad = ListProductsRequest { min_price_minor: -1, max_price_minor: 0, ..by("cost desc") };
    assert_eq!(bad_fields(&server.list(bad, None).await.expect_err("bad")), ["order_by", "min_price_minor"]);
    server.stop().await;
}

/// Letters beyond ASCII are found and sorted whatever their case, on SQLite too (whose LOWER folds ASCII only),
/// also for products stored before the service kept case-folded keys.
async fn letters_beyond_ascii_are_found_and_sorted_in_any_case(db: Db) {
    let server = Server::start(db.clone()).await;
    let described = |sku: &str, name: &str, description: &str| Product {
        description: description.into(),
        ..product(sku, name, "tea", 500)
    };
    server.create(described("CASE-1", "Ölkanne", "Aus Edelstahl")).await;
    server.create(described("CASE-2", "ökotee", "Grün")).await;
    server.create(described("CASE-3", "Wintertee", "Mit ÄPFELN und Zimt")).await;
    let names = |products: Vec<Product>| products.into_iter().map(|p| p.name).collect::<Vec<_>>();
    let search =
        |query: &str| ListProductsRequest { query: query.into(), order_by: "name".into(), ..Default::default() };
    let list = |request| async { names(server.list(request, None).await.expect("lists").products) };
    assert_eq!(list(search("öl")).await, ["Ölkanne"]);
    assert_eq!(list(search("ÖKO")).await, ["ökotee"]);
    assert_eq!(list(search("äpfeln")).await, ["Wintertee"], "the description, in another case");
    let by_name = ListProductsRequest { order_by: "name".into(), ..Default::default() };
    assert_eq!(list(by_name.clone()).await, ["Wintertee", "ökotee", "Ölkanne"], "ö with Ö, k before l");

    // Rows from before the keys existed get theirs at the next start.
    platform::with_db!(&db, pool => {
        sqlx::query("UPDATE products SET name_key = '', description_key = ''").execute(pool).await.expect("sql");
    });
    server.stop().await;
    let server = Server::start(db).await;
    let list = |request| async { names(server.list(request, None).await.expect("lists").products) };
    assert_eq!(list(search("äpfeln")).await, ["Wintertee"]);
    assert_eq!(list(by_name).await, ["Wintertee", "ökotee", "Ölkanne"]);
    server.stop().await;
}

async fn categories_are_described_and_listed_with_their_products(db: Db) {
    let server = Server::start(db).await;
    server.create(product("CAT-1", "Sencha", "green-tea", 900)).await;
    server.create(product("CAT-2", "Matcha", "green-tea", 1900)).await;
    server.create(product("CAT-3", "Espresso", "coffee", 1200)).await;
    server.create(Product { active: false, ..product("CAT-4", "Old mug", "mugs", 500) }).await;
    let mut client = server.client.clone();
    let listed = || {
        let mut client = server.client.clone();
        async move {
            let all = client.list_categories(ListCategoriesRequest {}).await.expect("anyone lists").into_inner();
            all.categories.into_iter().map(|c| (c.slug, c.name, c.product_count, c.described)).collect::<Vec<_>>()
        }
    };
    let row =
        |slug: &str, name: &str, count: i32, described: bool| (slug.to_owned(), name.to_owned(), count, described);
    // Undescribed categories come from the products for sale, named by their slug.
    assert_eq!(listed().await, [row("coffee", "coffee", 1, false), row("green-tea", "green-tea", 2, false)]);

    let admin = server.admin();
    let describe = |slug: &str, name: &str, position: i32| {
        let category = Category {
            slug: slug.into(),
            name: name.into(),
            description: "For you.".into(),
            position,
            ..Category::default()
        };
        with_token(CreateCategoryRequest { category: Some(category) }, &admin)
    };
    let green = client.create_category(describe("green-tea", " Green tea ", 1)).await.expect("described").into_inner();
    let green = green.category.expect("category");
    assert_eq!((green.name.as_str(), green.product_count, green.described), ("Green tea", 2, true));
    client.create_category(describe("gifts", "Gifts", 0)).await.expect("described, with no products yet");
    assert_eq!(
        listed().await,
        [row("gifts", "Gifts", 0, true), row("green-tea", "Green tea", 2, true), row("coffee", "coffee", 1, false)]
    );
    let twice = client.create_category(describe("gifts", "Gifts", 0)).await.expect_err("described already");
    assert_eq!(twice.code(), Code::AlreadyExists);
    let bad = client.create_category(describe("Gifts!", "", 0)).await.expect_err("bad");
    assert_eq!(bad_fields(&bad), ["category.slug", "category.name"]);
    let customer = server.customer();
    let request = with_token(
        CreateCategoryRequest {
            category: Some(Category { slug: "x".into(), name: "X".into(), ..Category::default() }),
        },
        &customer,
    );
    assert_eq!(client.create_category(request).await.expect_err("editors only").code(), Code::PermissionDenied);

    // Only the fields the mask names change.
    let moved = Category { position: 9, name: "ignored".into(), ..Category::default() };
    let mask = prost_types::FieldMask { paths: vec!["position".into()] };
    let update = UpdateCategoryRequest { slug: "gifts".into(), category: Some(moved), update_mask: Some(mask) };
    let gifts = client.update_category(with_token(update.clone(), &admin)).await.expect("moved").into_inner();
    assert_eq!(gifts.category.map(|c| (c.name, c.position)), Some(("Gifts".to_owned(), 9)));
    assert_eq!(listed().await[0].0, "green-tea", "by position");
    let unknown = UpdateCategoryRequest { slug: "teapots".into(), ..update };
    assert_eq!(client.update_category(with_token(unknown, &admin)).await.expect_err("none").code(), Code::NotFound);

    // Without its description a category its products name is listed undescribed again.
    let delete = || with_token(DeleteCategoryRequest { slug: "green-tea".into() }, &admin);
    client.delete_category(delete()).await.expect("deleted");
    assert_eq!(client.delete_category(delete()).await.expect_err("gone").code(), Code::NotFound);
    assert_eq!(
        listed().await,
        [row("gifts", "Gifts", 0, true), row("coffee", "coffee", 1, false), row("green-tea", "green-tea", 2, false)]
    );
    server.stop().await;
}

/// The shop describes at most 200 categories, also when the last places are taken by creations at once.
async fn at_most_200_categories_even_when_created_together(db: Db) {
    let server = Server::start(db.clone()).await;
    // Answering a listing, the service has migrated its database.
    server.client.clone().list_categories(ListCategoriesRequest {}).await.expect("lists");
    platform::with_db!(&db, pool => {
        for n in 0..195 {
            sqlx::query("INSERT INTO categories (slug, name, description, position, create_time, update_time) VALUES ($1, $1, '', 0, 0, 0)")
                .bind(format!("filler-{n}"))
                .execute(pool)
                .await
                .expect("a filler");
        }
    });
    let admin = server.admin();
    let creations = (0..10).map(|n| {
        let mut client = server.client.clone();
        let category = Category { slug: format!("last-{n}"), name: format!("Last {n}"), ..Category::default() };
        let request = with_token(CreateCategoryRequest { category: Some(category) }, &admin);
        tokio::spawn(async move { client.create_category(request).await })
    });
    let (mut created, mut refused) = (0, 0);
    for creation in creations.collect::<Vec<_>>() {
        match creation.await.expect("task") {
            Ok(_) => created += 1,
            Err(status) => {
                assert_eq!((status.code(), reason(&status)), (Code::FailedPrecondition, "CATEGORY_LIMIT".to_owned()));
                refused += 1;
            }
        }
    }
    assert_eq!((created, refused), (5, 5), "the five places left are taken once each");
    let mut client = server.client.clone();
    let listed = client.list_categories(ListCategoriesRequest {}).await.expect("lists").into_inner();
    assert_eq!(listed.categories.iter().filter(|c| c.described).count(), 200);
    server.stop().await;
}

async fn product_images(db: Db) {
    let server = Server::start(db).await;
    let admin = server.admin();
    let mug = server.create(product("MUG-1", "Mug", "kitchen", 1200)).await;
    let jpeg = b"\xFF\xD8\xFF\xE0\0\x10JFIF\0";

    // Staff add images; the product shows them in the order added, each with where its bytes are.
    let first = server.add_image(&admin, &mug.id, "image/png", PNG).await.expect("png");
    let second = server.add_image(&admin, &mug.id, "image/jpeg", jpeg).await.expect("jpeg");
    assert_eq!((first.content_type.as_str(), first.size_bytes), ("image/png", PNG.len() as i64));
    assert_eq!(first.uri, format!("/v1/products/{}/images/{}/content", mug.id, first.id));
    let shown = server.get_as(None, &mug.id).await.expect("get");
    assert_eq!(shown.images, [first.clone(), second.clone()]);
    // Images are part of the product: each addition announces it as it is now, and it changed then.
    let announced = server.announced(2).await;
    let images = |products: &[Product]| products.iter().map(|p| p.images.clone()).collect::<Vec<_>>();
    assert_eq!(images(&announced), [vec![first.clone()], vec![first.clone(), second.clone()]]);
    let time = |p: &Product| p.update_time.map(|t| (t.seconds, t.nanos)).expect("update_time");
    assert!(time(&announced[0]) > time(&mug) && time(&announced[1]) > time(&announced[0]), "{announced:?}");
    assert_eq!(time(&shown), time(&announced[1]));
    let listed = server.client.clone().list_products(ListProductsRequest::default()).await.expect("list");
    let in_list = listed.into_inner().products.into_iter().find(|p| p.id == mug.id).expect("listed");
    assert_eq!(in_list.images, [first.clone(), second.clone()], "lists carry images too");

    // Anyone fetches the bytes, exactly as sent, with their type.
    assert_eq!(server.image_content(&mug.id, &first.id).await.expect("content"), ("image/png".into(), PNG.to_vec()));
    assert_eq!(server.image_content(&mug.id, &second.id).await.expect("content").1, jpeg.to_vec());
    // An image is reached through its own product only.
    let other = server.create(product("MUG-2", "Other mug", "kitchen", 1200)).await;
    let wrong = server.image_content(&other.id, &first.id).await.expect_err("another product's image");
    assert_eq!(wrong.code(), Code::NotFound);

    // Bad images are refused with the field that is wrong, and nothing is kept of them.
    let lying = server.add_image(&admin, &mug.id, "image/jpeg", PNG).await.expect_err("a PNG sent as JPEG");
    assert_eq!(bad_fields(&lying), ["data"]);
    let html = server.add_image(&admin, &mug.id, "text/html", b"<script>").await.expect_err("html");
    assert_eq!(bad_fields(&html), ["content_type"]);
    let huge = [PNG, &vec![0u8; 512 * 1024]].concat();
    assert_eq!(bad_fields(&server.add_image(&admin, &mug.id, "image/png", &huge).await.expect_err("huge")), ["data"]);
    let missing = server.add_image(&admin, "no-such-product", "image/png", PNG).await.expect_err("no product");
    assert_eq!(missing.code(), Code::NotFound);
    // Customers may not add images.
    let denied = server.add_image(&server.customer(), &mug.id, "image/png", PNG).await.expect_err("customer");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // At most ten images a product; the eleventh is refused and leaves no bytes behind.
    for _ in 2..10 {
        server.add_image(&admin, &mug.id, "image/png", PNG).await.expect("within the limit");
    }
    let full = server.add_image(&admin, &mug.id, "image/png", PNG).await.expect_err("eleventh");
    assert_eq!((full.code(), reason(&full).as_str()), (Code::FailedPrecondition, "IMAGE_LIMIT"));
    let files = |dir: &std::path::Path| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let product_dir = server.blob_dir.path().join("products").join(&mug.id);
    assert_eq!(files(&product_dir), 10, "one file per image, none for refused ones");

    // Deleting one keeps the others' order and removes its bytes.
    let delete = |image_id: &str| DeleteProductImageRequest { product_id: mug.id.clone(), image_id: image_id.into() };
    server.client.clone().delete_product_image(with_token(delete(&first.id), &admin)).await.expect("delete");
    let after = server.get_as(None, &mug.id).await.expect("get").images;
    assert_eq!((after.len(), &after[0]), (9, &second));
    assert_eq!(server.image_content(&mug.id, &first.id).await.expect_err("gone").code(), Code::NotFound);
    assert_eq!(files(&product_dir), 9);
    let again = server.client.clone().delete_product_image(with_token(delete(&first.id), &admin)).await;
    assert_eq!(again.expect_err("deleted already").code(), Code::NotFound);
    // Ten additions and one deletion were announced; refusals announce nothing.
    let announced = server.announced(11).await;
    assert_eq!(announced.iter().map(|p| p.images.len()).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 9]);
    assert_eq!(announced[10].images, after);
    assert!(time(&announced[10]) > time(&announced[9]));

    // Bytes no row names (a crash between the two writes) are swept once they are old enough; images stay.
    let blobs = platform::blob::Blobs::in_directory(server.blob_dir.path()).expect("blobs");
    blobs.put(&format!("products/{}/crashed-upload", mug.id), b"orphan".to_vec().into()).await.expect("put");
    let now = platform::time::now_micros();
    assert_eq!(
        catalog::sweep_orphan_images(&server.db, &blobs, now - 60_000_000).await.expect("sweep"),
        0,
        "too young"
    );
    assert_eq!(catalog::sweep_orphan_images(&server.db, &blobs, now + 1_000_000).await.expect("sweep"), 1);
    assert_eq!(files(&product_dir), 9, "every image's bytes stayed");
    assert_eq!(server.image_content(&mug.id, &second.id).await.expect("still served").1, jpeg);

    // An inactive product's images are as hidden as the product, but staff still see them.
    let hide = UpdateProductRequest {
        id: mug.id.clone(),
        product: Some(Product { active: false, ..Product::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["active".into()] }),
    };
    server.client.clone().update_product(with_token(hide, &admin)).await.expect("hide");
    let announced = server.announced(12).await;
    assert_eq!(announced.len(), 12, "nothing else was announced");
    assert_eq!((announced[11].active, &announced[11].images), (false, &after), "an update carries the images too");
    assert_eq!(server.image_content(&mug.id, &second.id).await.expect_err("hidden").code(), Code::NotFound);
    assert_eq!(server.get_as(Some(&admin), &mug.id).await.expect("staff").images.len(), 9);
    server.stop().await;
}

async fn update_and_visibility(db: Db) {
    let server = Server::start(db).await;
    let original = server.create(product("TEA-SEN-100", "Sencha", "tea", 1190)).await;
    let other = server.create(product("TEA-ASS-250", "Assam", "tea", 890)).await;
    let mut client = server.client.clone();
    let update = |id: &str, product: Product, paths: &[&str]| UpdateProductRequest {
        id: id.into(),
        product: Some(product),
        update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
    };

    let changes = Product {
        sku: "IGNORED".into(),
        name: "Japanese Sencha".into(),
        description: "ignored".into(),
        price: Some(Money { currency: "USD".into(), amount_minor: 1290 }),
        category: "ignored".into(),
        ..Product::default()
    };
    let updated = client
        .update_product(with_token(update(&original.id, changes, &["name", "price.amount_minor"]), &server.admin()))
        .await
        .expect("update")
        .into_inner()
        .product
        .expect("product");
    assert_eq!(updated.name, "Japanese Sencha");
    assert_eq!(updated.price, Some(Money { currency: "EUR".into(), amount_minor: 1290 }));
    assert_eq!(
        (&updated.sku, &updated.description, &updated.category, updated.active),
        (&original.sku, &original.description, &original.category, true)
    );
    assert_eq!(updated.create_time, original.create_time);
    let (before, after) = (original.update_time.expect("t"), updated.update_time.expect("t"));
    assert!((after.seconds, after.nanos) > (before.seconds, before.nanos), "update_time moves forward");
    assert_eq!(server.get(&original.id, None).await.expect("get"), updated, "the change is stored");

    // The tax class: standard unless set, changed when named, and only to a class there is.
    assert_eq!(original.tax_class, TaxClass::Standard as i32, "standard unless set");
    let reduced = Product { tax_class: TaxClass::Reduced as i32, name: "ignored".into(), ..Product::default() };
    let taxed = client
        .update_product(with_token(update(&original.id, reduced, &["tax_class"]), &server.admin()))
        .await
        .expect("update")
        .into_inner()
        .product
        .expect("product");
    assert_eq!((taxed.tax_class, taxed.name.as_str()), (TaxClass::Reduced as i32, "Japanese Sencha"));
    assert_eq!(server.get(&original.id, None).await.expect("get").tax_class, TaxClass::Reduced as i32);
    let renamed = Product { name: "Sencha".into(), ..Product::default() };
    let renamed = client
        .update_product(with_token(update(&original.id, renamed, &["name"]), &server.admin()))
        .await
        .expect("update")
        .into_inner()
        .product
        .expect("product");
    assert_eq!(renamed.tax_class, TaxClass::Reduced as i32, "kept unless named");
    let unknown = Product { tax_class: 9, ..Product::default() };
    let err = client
        .update_product(with_token(update(&original.id, unknown, &["tax_class"]), &server.admin()))
        .await
        .expect_err("no such class");
    assert_eq!(bad_fields(&err), ["product.tax_class"]);

    let err = client
        .update_product(with_token(update(&original.id, Product::default(), &[]), &server.admin()))
        .await
        .expect_err("empty mask");
    assert_eq!(bad_fields(&err), ["update_mask"]);
    let err = client
        .update_product(with_token(update(&original.id, Product::default(), &["id"]), &server.admin()))
        .await
        .expect_err("unknown path");
    assert_eq!(bad_fields(&err), ["update_mask"]);
    let err = client
        .update_product(with_token(update(&original.id, Product::default(), &["price.currency"]), &server.admin()))
        .await
        .expect_err("invalid value");
    assert_eq!(bad_fields(&err), ["product.price.currency"]);
    let taken = Product { sku: other.sku.clone(), ..Product::default() };
    let err = client
        .update_product(with_token(update(&original.id, taken, &["sku"]), &server.admin()))
        .await
        .expect_err("sku taken");
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = client
        .update_product(with_token(update("nope", Product::default(), &["name"]), &server.admin()))
        .await
        .expect_err("unknown id");
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .update_product(with_token(update(&original.id, Product::default(), &["active"]), &server.customer()))
        .await
        .expect_err("customer");
    assert_eq!(err.code(), Code::PermissionDenied);

    // Deactivate: customers no longer see it, staff still do.
    let hidden = client
        .update_product(with_token(update(&original.id, Product::default(), &["active"]), &server.admin()))
        .await
        .expect("deactivate")
        .into_inner()
        .product
        .expect("product");
    assert!(!hidden.active);
    assert_eq!(server.get(&original.id, None).await.expect_err("anonymous").code(), Code::NotFound);
    let customer = server.customer();
    assert_eq!(server.get(&original.id, Some(&customer)).await.expect_err("customer").code(), Code::NotFound);
    assert_eq!(server.get(&original.id, Some(&server.admin())).await.expect("staff"), hidden);
    let public = server.list(ListProductsRequest::default(), None).await.expect("list");
    assert_eq!(public.products.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), [other.id.as_str()]);
    let staff = server
        .list(ListProductsRequest { include_inactive: true, ..Default::default() }, Some(&server.admin()))
        .await
        .expect("staff list");
    assert_eq!(staff.products.len(), 2);

    server.adjust(&original.id, 5).await.expect("stock");
    let err = server.reserve("order-inactive", &[(&original.id, 1)]).await.expect_err("inactive");
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "PRODUCT_INACTIVE"));

    // A product is created in its tax class.
    let genmaicha = Product { tax_class: TaxClass::Reduced as i32, ..product("TEA-GEN-50", "Genmaicha", "tea", 690) };
    assert_eq!(server.create(genmaicha).await.tax_class, TaxClass::Reduced as i32);
    server.stop().await;
}

async fn inventory_adjustments(db: Db) {
    let server = Server::start(db).await;
    let p = server.create(product("KIT-V60-02", "Dripper", "kitchen", 2490)).await;
    assert_eq!(stock(&server.adjust(&p.id, 10).await.expect("up")), (10, 0, 10));
    assert_eq!(stock(&server.adjust(&p.id, -3).await.expect("down")), (7, 0, 7));
    assert_eq!(server.reserve("order-1", &[(&p.id, 5)]).await.expect("reserve"), HELD);
    assert_eq!(stock(&server.inventory(&p.id).await), (7, 5, 2));

    let err = server.adjust(&p.id, -3).await.expect_err("below reserved");
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "INSUFFICIENT_STOCK"));
    assert_eq!(stock(&server.inventory(&p.id).await), (7, 5, 2), "a refused adjustment changes nothing");
    assert_eq!(stock(&server.adjust(&p.id, -2).await.expect("down to reserved")), (5, 5, 0));
    assert_eq!(bad_fields(&server.adjust(&p.id, 0).await.expect_err("zero")), ["delta"]);
    assert_eq!(bad_fields(&server.adjust("", 1).await.expect_err("no product")), ["product_id"]);
    assert_eq!(server.adjust("missing", 1).await.expect_err("unknown").code(), Code::NotFound);
    let err = server.adjust(&p.id, i32::MAX).await.expect_err("beyond int32");
    assert_eq!(err.code(), Code::FailedPrecondition);

    let mut client = server.client.clone();
    let request = AdjustInventoryRequest { product_id: p.id.clone(), delta: 1, reason: String::new() };
    let err = client.adjust_inventory(with_token(request, &server.customer())).await.expect_err("customer");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = client
        .get_inventory(Request::new(GetInventoryRequest { product_id: "missing".into() }))
        .await
        .expect_err("unknown product");
    assert_eq!(err.code(), Code::NotFound);

    // Every accepted change is in the stock history, with who made it.
    let history: Vec<(i64, String)> = platform::with_db!(&server.db, pool => {
        sqlx::query_as("SELECT delta, actor FROM inventory_adjustments WHERE product_id = $1 ORDER BY create_time")
            .bind(&p.id)
            .fetch_all(pool)
            .await
            .expect("history")
    });
    assert_eq!(history, [(10, "admin-1".to_owned()), (-3, "admin-1".to_owned()), (-2, "admin-1".to_owned())]);
    server.stop().await;
}

async fn reservations_never_oversell(db: Db) {
    let server = Server::start(db).await;
    let p = server.create(product("GM-AZL-003", "Azul", "games", 3499)).await;
    server.adjust(&p.id, 50).await.expect("stock");

    let calls = (0..200).map(|i| {
        let mut client = server.client.clone();
        let request = with_token(
            ReserveStockRequest {
                reservation_id: format!("order-{i:03}"),
                items: vec![StockItem { product_id: p.id.clone(), quantity: 1 }],
            },
            &server.orders(),
        );
        async move { (i, client.reserve_stock(request).await) }
    });
    let results = futures::future::join_all(calls).await;
    let mut held = Vec::new();
    for (i, result) in results {
        match result {
            Ok(response) => {
                assert_eq!(response.get_ref().status, HELD);
                held.push(format!("order-{i:03}"));
            }
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(reason(&status), "INSUFFICIENT_STOCK");
            }
        }
    }
    assert_eq!(held.len(), 50, "exactly the stock on hand is reserved");
    assert_eq!(stock(&server.inventory(&p.id).await), (50, 50, 0));

    // Commit 20, release 10.
    for id in &held[..20] {
        assert_eq!(server.commit(id).await.expect("commit"), COMMITTED);
    }
    assert_eq!(stock(&server.inventory(&p.id).await), (30, 30, 0));
    for id in &held[20..30] {
        assert_eq!(server.release(id).await.expect("release"), RELEASED);
    }
    assert_eq!(stock(&server.inventory(&p.id).await), (30, 20, 10));

    // Repeats are idempotent and never move stock twice.
    assert_eq!(server.reserve(&held[0], &[(&p.id, 1)]).await.expect("repeat committed"), COMMITTED);
    assert_eq!(server.reserve(&held[20], &[(&p.id, 1)]).await.expect("repeat released"), RELEASED);
    assert_eq!(server.reserve(&held[40], &[(&p.id, 1)]).await.expect("repeat held"), HELD);
    assert_eq!(server.commit(&held[0]).await.expect("commit again"), COMMITTED);
    assert_eq!(server.release(&held[20]).await.expect("release again"), RELEASED);
    assert_eq!(stock(&server.inventory(&p.id).await), (30, 20, 10));

    // Settled one way, a reservation cannot be settled the other.
    let err = server.release(&held[0]).await.expect_err("release after commit");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = server.commit(&held[20]).await.expect_err("commit after release");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(server.release("no-such-order").await.expect_err("unknown").code(), Code::NotFound);
    assert_eq!(server.commit("no-such-order").await.expect_err("unknown").code(), Code::NotFound);

    // Concurrent releases of one reservation give its stock back once.
    let releases = (0..10).map(|_| server.release(&held[30]));
    for result in futures::future::join_all(releases).await {
        assert_eq!(result.expect("release"), RELEASED);
    }
    assert_eq!(stock(&server.inventory(&p.id).await), (30, 19, 11));

    // All or nothing across items.
    let q = server.create(product("GM-PDM-005", "Pandemic", "games", 3799)).await;
    server.adjust(&q.id, 3).await.expect("stock");
    let err = server.reserve("order-multi", &[(&p.id, 2), (&q.id, 5)]).await.expect_err("not enough of q");
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "INSUFFICIENT_STOCK"));
    assert!(err.message().contains(&q.id), "names the product: {}", err.message());
    assert_eq!(stock(&server.inventory(&p.id).await), (30, 19, 11), "nothing held of p");
    assert_eq!(server.reserve("order-multi", &[(&p.id, 2), (&q.id, 3)]).await.expect("now it fits"), HELD);
    assert_eq!(stock(&server.inventory(&q.id).await), (3, 3, 0));
    assert_eq!(stock(&server.inventory(&p.id).await), (30, 21, 9));
    // A sale of several lines sells each of them.
    assert_eq!(server.commit("order-multi").await.expect("sell both"), COMMITTED);
    assert_eq!(stock(&server.inventory(&q.id).await), (0, 0, 0));
    assert_eq!(stock(&server.inventory(&p.id).await), (28, 19, 9));
    // Settled again, it sells nothing twice.
    assert_eq!(server.commit("order-multi").await.expect("sell both again"), COMMITTED);
    assert_eq!(stock(&server.inventory(&q.id).await), (0, 0, 0));
    assert_eq!(stock(&server.inventory(&p.id).await), (28, 19, 9));
    // The first line refused, nothing is held and the id stays free.
    let err = server.reserve("order-big", &[(&p.id, 10)]).await.expect_err("more than available");
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "INSUFFICIENT_STOCK"));
    assert_eq!(server.reserve("order-big", &[(&p.id, 9)]).await.expect("the id is still free"), HELD);
    assert_eq!(server.release("order-big").await.expect("release"), RELEASED);
    // A line naming no product is named, whichever line it is.
    let err = server.reserve("order-ghost", &[(&p.id, 1), ("zz-no-such-product", 1)]).await.expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("zz-no-such-product"), "names the product: {}", err.message());
    assert_eq!(stock(&server.inventory(&p.id).await), (28, 19, 9), "nothing held of p");

    // The same reservation id sent many times at once (a retrying client) holds stock once.
    let one = [(p.id.as_str(), 1)];
    let duplicates = (0..20).map(|_| server.reserve("order-dup", &one));
    for result in futures::future::join_all(duplicates).await {
        assert_eq!(result.expect("duplicate reserve"), HELD);
    }
    assert_eq!(stock(&server.inventory(&p.id).await), (28, 20, 8));
    let err = server.reserve("order-ghost", &[("no-such-product", 1)]).await.expect_err("unknown product");
    assert_eq!(err.code(), Code::NotFound);

    // Malformed reservations name their fields.
    assert_eq!(bad_fields(&server.reserve("order-x", &[]).await.expect_err("no items")), ["items"]);
    let err = server.reserve("order-x", &[(&p.id, 1), (&p.id, 0)]).await.expect_err("bad items");
    assert_eq!(bad_fields(&err), ["items[1].product_id", "items[1].quantity"]);
    assert_eq!(bad_fields(&server.reserve("", &[(&p.id, 1)]).await.expect_err("no id")), ["reservation_id"]);
    let mut client = server.client.clone();
    let request = with_token(ReserveStockRequest::default(), &server.customer());
    assert_eq!(client.reserve_stock(request).await.expect_err("customer").code(), Code::PermissionDenied);
    server.stop().await;
}

async fn seeding_is_idempotent(db: Db) {
    let inserted = catalog::seed_demo_into(&db).await.expect("seed");
    assert!(inserted >= 30, "seeded {inserted}");
    assert_eq!(catalog::seed_demo_into(&db).await.expect("seed again"), 0);
    let server = Server::start(db).await;
    let every = ListProductsRequest { page_size: 100, include_variants: true, ..Default::default() };
    let all = server.list(every, None).await.expect("list");
    assert_eq!(all.products.len(), inserted);
    // The T-shirt comes in four sizes, listed once.
    let shirts = ListProductsRequest { category: "apparel".into(), query: "shirt".into(), ..Default::default() };
    let shirts = server.list(shirts, None).await.expect("list").products;
    let sizes: Vec<&str> = shirts.iter().flat_map(|p| &p.variants).map(|v| v.options[0].value.as_str()).collect();
    assert_eq!((shirts.len(), sizes), (1, vec!["S", "M", "L", "XL"]));
    let categories: HashSet<&str> = all.products.iter().map(|p| p.category.as_str()).collect();
    assert!(categories.len() >= 5, "{categories:?}");
    for p in &all.products {
        let inv = server.inventory(&p.id).await;
        assert!((5..=200).contains(&inv.on_hand), "{} has {} on hand", p.sku, inv.on_hand);
        assert_eq!(p.price.as_ref().map(|m| m.currency.as_str()), Some("EUR"));
        // Food and books at the reduced rate (where a country has one), the rest at the standard.
        let reduced = ["coffee", "tea", "books"].contains(&p.category.as_str());
        let class = if reduced { TaxClass::Reduced } else { TaxClass::Standard };
        assert_eq!(p.tax_class, class as i32, "{} in {}", p.sku, p.category);
    }
    server.stop().await;
}

/// Runs each scenario once on SQLite and once on PostgreSQL.
/// Those who manage stock list it fewest units available first (reservations count), a page at a time, only
/// what is below a number of units if they ask, inactive products only if they ask; nobody else lists it.
async fn stock_levels_list_what_to_restock_first(db: Db) {
    let server = Server::start(db).await;
    let mut made = Vec::new();
    for (sku, on_hand) in [("TEA-1", 12), ("TEA-2", 3), ("TEA-3", 0), ("TEA-4", 7), ("TEA-5", 3)] {
        let created = server.create(product(sku, sku, "tea", 500)).await;
        if on_hand > 0 {
            server.adjust(&created.id, on_hand).await.expect("stocked");
        }
        made.push(created);
    }
    // Four of TEA-4's seven are held by a checkout: three available, as many as TEA-2 and TEA-5 (ties by id).
    server.reserve("order-1", &[(&made[3].id, 4)]).await.expect("held");
    let hidden = server.create(product("TEA-6", "TEA-6", "tea", 500)).await;
    let hide = UpdateProductRequest {
        id: hidden.id.clone(),
        product: Some(Product { active: false, ..Product::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["active".into()] }),
    };
    server.client.clone().update_product(with_token(hide, &server.admin())).await.expect("hidden");

    let list = |token: String, request: ListStockLevelsRequest| {
        let mut client = server.client.clone();
        async move { client.list_stock_levels(with_token(request, &token)).await.map(|r| r.into_inner()) }
    };
    let lines = |page: &ListStockLevelsResponse| -> Vec<(String, (i32, i32, i32))> {
        page.stock_levels
            .iter()
            .map(|level| (level.sku.clone(), stock(level.inventory.as_ref().expect("inventory"))))
            .collect()
    };
    let mut three_left = [made[1].clone(), made[3].clone(), made[4].clone()];
    three_left.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = vec![("TEA-3".to_owned(), (0, 0, 0))];
    expected.extend(three_left.iter().map(|p| (p.sku.clone(), if p.sku == "TEA-4" { (7, 4, 3) } else { (3, 0, 3) })));
    expected.push(("TEA-1".to_owned(), (12, 0, 12)));
    let everything = list(server.admin(), ListStockLevelsRequest::default()).await.expect("lists");
    assert_eq!(lines(&everything), expected, "fewest available first, ties by product id");
    let first = &everything.stock_levels[0];
    assert_eq!((first.name.as_str(), first.active), ("TEA-3", true));
    assert_eq!(first.inventory.as_ref().map(|i| i.product_id.as_str()), Some(made[2].id.as_str()));

    // A page at a time: none repeated or skipped, ties split across pages included.
    let mut walked = Vec::new();
    let mut request = ListStockLevelsRequest { page_size: 2, ..Default::default() };
    for _ in 0..10 {
        let page = list(server.admin(), request.clone()).await.expect("a page");
        assert!(page.stock_levels.len() <= 2);
        walked.extend(lines(&page));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert_eq!(walked, expected);

    let below = |n: i32| ListStockLevelsRequest { available_below: n, ..Default::default() };
    assert_eq!(lines(&list(server.admin(), below(1)).await.expect("sold out")), expected[..1], "sold out");
    assert_eq!(lines(&list(server.admin(), below(5)).await.expect("low")), expected[..4], "below five");
    let all = ListStockLevelsRequest { include_inactive: true, ..Default::default() };
    let with_hidden = list(server.admin(), all).await.expect("with inactive");
    assert_eq!(with_hidden.stock_levels.len(), 6);
    assert!(with_hidden.stock_levels.iter().any(|level| level.sku == "TEA-6" && !level.active));

    for token in [server.customer(), server.orders()] {
        let denied = list(token, ListStockLevelsRequest::default()).await.expect_err("no inventory:write");
        assert_eq!(denied.code(), Code::PermissionDenied);
    }
    let bad =
        ListStockLevelsRequest { page_size: -1, page_token: "nope".into(), available_below: -1, ..Default::default() };
    assert_eq!(
        bad_fields(&list(server.admin(), bad).await.expect_err("bad")),
        ["page_size", "page_token", "available_below"]
    );
    server.stop().await;
}

/// Every change is published: products created and updated, units on hand adjusted (by hand and by sales),
/// and a product's available units falling below the threshold — once per crossing.
async fn changes_are_published(db: Db) {
    let server = Server::start(db).await;
    let tea = server.create(product("TEA-9", "Tea", "tea", 450)).await;
    let update = UpdateProductRequest {
        product: Some(Product {
            price: Some(Money { currency: "EUR".into(), amount_minor: 500 }),
            ..Product::default()
        }),
        id: tea.id.clone(),
        update_mask: Some(prost_types::FieldMask { paths: vec!["price".into()] }),
    };
    server.client.clone().update_product(with_token(update, &server.admin())).await.expect("update");
    server.adjust(&tea.id, 7).await.expect("stock");
    server.reserve("order-1", &[(&tea.id, 2)]).await.expect("5 left: not yet low");
    server.reserve("order-2", &[(&tea.id, 1)]).await.expect("4 left: low");
    server.reserve("order-3", &[(&tea.id, 1)]).await.expect("3 left: still low, no second event");
    server.commit("order-1").await.expect("sold");
    server.release("order-2").await.expect("released");

    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = server.published.lock().expect("lock").clone();
        if seen.len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kinds: Vec<&str> = seen.iter().map(|(kind, _, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["product.created", "product.updated", "inventory.adjusted", "inventory.low", "inventory.adjusted"],
        "in the order they happened"
    );
    assert!(seen.iter().all(|(_, subject, _)| *subject == tea.id), "each about the product");
    let updated = ProductUpdated::decode(seen[1].2.as_slice()).expect("payload").product.expect("product");
    assert_eq!(updated.price.map(|m| m.amount_minor), Some(500));
    let stocked = InventoryAdjusted::decode(seen[2].2.as_slice()).expect("payload");
    assert_eq!((stocked.delta, stocked.actor.as_str()), (7, "admin-1"));
    let low = InventoryLow::decode(seen[3].2.as_slice()).expect("payload");
    assert_eq!((low.available, low.threshold), (4, 5));
    assert_eq!((low.sku.as_str(), low.name.as_str()), ("TEA-9", "Tea"), "what a restocker needs");
    let sold = InventoryAdjusted::decode(seen[4].2.as_slice()).expect("payload");
    assert_eq!((sold.delta, sold.reason.as_str()), (-2, "sale: reservation order-1"));
    server.stop().await;
}

/// A hold says whether it wrote an event, so that the relay is woken only when there is something to publish:
/// only the hold that takes the product below the low-stock threshold writes one.
async fn holds_say_whether_they_wrote_an_event(db: Db) {
    use catalog::domain::ReserveItem;
    let server = Server::start(db).await;
    let tea = server.create(product("TEA-7", "Tea", "tea", 450)).await;
    server.adjust(&tea.id, 7).await.expect("stock");
    let store = catalog::store::Store::new(server.db.clone());
    let items = |quantity: i64| vec![ReserveItem { product_id: tea.id.clone(), quantity }];
    let now = 1;
    let first = store.reserve("hold-1", &items(2), now).await.expect("5 left");
    assert!(!first.wrote_events, "5 left: not below the threshold");
    let second = store.reserve("hold-2", &items(1), now).await.expect("4 left");
    assert!(second.wrote_events, "4 left: inventory.low");
    let again = store.reserve("hold-2", &items(1), now).await.expect("repeat");
    assert!(!again.wrote_events, "a repeated reservation holds and writes nothing");
    let third = store.reserve("hold-3", &items(1), now).await.expect("3 left");
    assert!(!third.wrote_events, "still low: no second event");
    server.stop().await;
}

/// A cancelled order's units go back on hand once, however often its `order.cancelled` is delivered.
async fn a_cancelled_order_is_restocked_once(db: Db) {
    let server = Server::start(db).await;
    let tea = server.create(product("TEA-1", "Tea", "tea", 500)).await;
    server.adjust(&tea.id, 10).await.expect("stock");
    assert_eq!(server.reserve("o-1", &[(&tea.id, 3)]).await.expect("hold"), 1);
    server.commit("o-1").await.expect("sold");
    assert_eq!(server.inventory(&tea.id).await.on_hand, 7);

    let item = api::mercato::orders::v1::OrderItem { product_id: tea.id.clone(), quantity: 3, ..Default::default() };
    let cancelled =
        api::mercato::orders::v1::OrderCancelled { order_id: "o-1".into(), items: vec![item], ..Default::default() };
    let envelope = EventEnvelope {
        id: "ev-cancelled-1".into(),
        source: "orders".into(),
        r#type: "order.cancelled".into(),
        subject: "o-1".into(),
        data: cancelled.encode_to_vec(),
        ..EventEnvelope::default()
    };
    server.bus.publish(envelope.clone()).await.expect("taken");
    assert_eq!(server.inventory(&tea.id).await.on_hand, 10, "the units are back");
    server.bus.publish(envelope).await.expect("a redelivery is taken too");
    assert_eq!(server.inventory(&tea.id).await.on_hand, 10, "and only once");
    server.stop().await;
}

on_both_engines!(
    a_cancelled_order_is_restocked_once,
    holds_say_whether_they_wrote_an_event,
    changes_are_published,
    create_get_list_and_access,
    pagination_and_filters,
    sorted_by_price_or_name_and_bounded_by_price,
    letters_beyond_ascii_are_found_and_sorted_in_any_case,
    categories_are_described_and_listed_with_their_products,
    at_most_200_categories_even_when_created_together,
    update_and_visibility,
    product_images,
    inventory_adjustments,
    reservations_never_oversell,
    seeding_is_idempotent,
    stock_levels_list_what_to_restock_first,
);

#[tokio::test]
async fn seed_demo_uses_the_configured_database() {
    let dir = platform::testkit::TempDir::new("catalog-seed").expect("temp dir");
    let vars = [("MERCATO_DATA_DIR".to_owned(), dir.path().display().to_string())];
    let settings = platform::Settings::from_vars(vars).expect("settings");
    catalog::migrate(&settings).await.expect("migrate");
    let inserted = catalog::seed_demo(&settings).await.expect("seed");
    assert!(inserted >= 30);
    assert_eq!(catalog::seed_demo(&settings).await.expect("seed again"), 0);
    assert!(dir.path().join("catalog.db").exists());
}
