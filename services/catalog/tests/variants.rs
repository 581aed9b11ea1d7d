//! Variant groups over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL: a T-shirt in
//! sizes and colours, each a product of its own, listed once and shown with its choices; the group rules refused
//! with the field that breaks them.

use api::auth::UserDeleted;
use api::catalog::{
    CreateProductRequest, ListCategoriesRequest, ListProductsRequest, Product, ProductCreated, ProductOption,
    ProductReview, UpdateProductRequest,
};
use platform::db::Db;
use platform::events::EventBus;
use prost::Message;
use tonic::{Code, Request, Status};

mod harness;

use harness::*;

fn options(pairs: &[(&str, &str)]) -> Vec<ProductOption> {
    pairs.iter().map(|(name, value)| ProductOption { name: (*name).into(), value: (*value).into() }).collect()
}

/// A T-shirt product of `sku` with `options`, a variant of `variant_of` unless empty.
fn tee(sku: &str, variant_of: &str, pairs: &[(&str, &str)], cents: i64) -> Product {
    Product {
        variant_of: variant_of.into(),
        options: options(pairs),
        ..product(sku, &format!("Tee {sku}"), "apparel", cents)
    }
}

async fn try_create(server: &Server, product: Product) -> Result<Product, Status> {
    let request = with_token(CreateProductRequest { product: Some(product) }, &server.admin());
    Ok(server.client.clone().create_product(request).await?.into_inner().product.unwrap_or_default())
}

async fn try_update(server: &Server, id: &str, product: Product, paths: &[&str]) -> Result<Product, Status> {
    let mask = prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() };
    let request = UpdateProductRequest { id: id.into(), product: Some(product), update_mask: Some(mask) };
    let request = with_token(request, &server.admin());
    Ok(server.client.clone().update_product(request).await?.into_inner().product.unwrap_or_default())
}

/// A T-shirt in M (the base) and L, and a mug on its own.
async fn tshirt_and_mug(server: &Server) -> (Product, Product, Product) {
    let base = server.create(tee("TEE-M", "", &[("Size", "M")], 1900)).await;
    let large = server.create(tee("TEE-L", &base.id, &[("Size", "L")], 1900)).await;
    (base, large, server.create(product("MUG-1", "Mug", "kitchen", 900)).await)
}

/// The skus of a product's `variants`, in the order shown.
fn choices(product: &Product) -> Vec<&str> {
    product.variants.iter().map(|v| v.sku.as_str()).collect()
}

fn skus(products: &[Product]) -> Vec<&str> {
    products.iter().map(|p| p.sku.as_str()).collect()
}

async fn a_group_is_listed_once_and_shows_its_choices(db: Db) {
    let server = Server::start(db).await;
    let base = server.create(tee("TEE-M-RED", "", &[("Size", "M"), ("Colour", "red")], 1900)).await;
    assert!(base.variants.is_empty(), "a group of one shows no choices: {:?}", base.variants);
    let large = server.create(tee("TEE-L-RED", &base.id, &[("Size", "L"), ("Colour", "red")], 2100)).await;
    assert_eq!((large.variant_of.as_str(), choices(&large)), (base.id.as_str(), vec!["TEE-M-RED", "TEE-L-RED"]));
    let blue = server.create(tee("TEE-M-BLUE", &base.id, &[("Size", "M"), ("Colour", "blue")], 1900)).await;
    let mug = server.create(product("MUG-1", "Mug", "kitchen", 900)).await;
    server.adjust(&large.id, 3).await.expect("stock");

    // Every product of the group shows the same choices, the base first, with what a shopper picks by.
    let shown = server.get(&large.id, None).await.expect("get the variant");
    assert_eq!(choices(&shown), ["TEE-M-RED", "TEE-L-RED", "TEE-M-BLUE"]);
    assert_eq!(server.get(&base.id, None).await.expect("get the base").variants, shown.variants);
    let l = &shown.variants[1];
    assert_eq!((l.id.as_str(), l.options.clone(), l.available, l.active), (large.id.as_str(), large.options, 3, true));
    assert_eq!(l.price.as_ref().map(|p| p.amount_minor), Some(2100));
    assert_eq!(shown.variants[0].available, 0);

    // A list shows the group once, as its base with its choices; variants are found when asked for.
    let listed = server.list(ListProductsRequest::default(), None).await.expect("list");
    assert_eq!(skus(&listed.products), ["MUG-1", "TEE-M-RED"]);
    assert_eq!(choices(&listed.products[1]), ["TEE-M-RED", "TEE-L-RED", "TEE-M-BLUE"]);
    assert!(listed.products[0].variants.is_empty(), "a product on its own has none");
    let all = ListProductsRequest { include_variants: true, ..ListProductsRequest::default() };
    assert_eq!(skus(&server.list(all, None).await.expect("list all").products).len(), 4);
    let by_sku = |include_variants| ListProductsRequest {
        query: "tee-l".into(),
        include_variants,
        ..ListProductsRequest::default()
    };
    assert!(server.list(by_sku(false), None).await.expect("search").products.is_empty());
    assert_eq!(skus(&server.list(by_sku(true), None).await.expect("search").products), ["TEE-L-RED"]);
    // Categories count what their lists show: the T-shirt once.
    let request = Request::new(ListCategoriesRequest::default());
    let categories = server.client.clone().list_categories(request).await.expect("categories").into_inner();
    let counts: Vec<(&str, i32)> = categories.categories.iter().map(|c| (c.slug.as_str(), c.product_count)).collect();
    assert_eq!(counts, [("apparel", 1), ("kitchen", 1)]);

    // A variant not for sale is hidden from customers' choices, not from the shop's.
    let hidden = try_update(&server, &blue.id, Product::default(), &["active"]).await.expect("deactivate");
    assert_eq!(choices(&hidden), ["TEE-M-RED", "TEE-L-RED", "TEE-M-BLUE"], "the editor sees the whole group");
    assert_eq!(choices(&server.get(&base.id, None).await.expect("get")), ["TEE-M-RED", "TEE-L-RED"]);
    assert_eq!(choices(&server.get(&base.id, Some(server.admin().as_str())).await.expect("get")).len(), 3);

    // A variant is bought as any product: its own stock.
    server.reserve("order-1", &[(&large.id, 2)]).await.expect("hold two L");
    let after = server.get(&base.id, None).await.expect("get");
    assert_eq!((after.variants[1].available, after.variants[0].available), (1, 0));
    assert_eq!(stock(&server.inventory(&mug.id).await), (0, 0, 0));

    // What others learn of a new variant: its group and options.
    let created: Vec<ProductCreated> = server
        .published
        .lock()
        .expect("lock")
        .iter()
        .filter(|(kind, _, _)| kind == catalog::events::PRODUCT_CREATED)
        .map(|(_, _, data)| ProductCreated::decode(data.as_slice()).expect("payload"))
        .collect();
    let announced = created.iter().filter_map(|c| c.product.as_ref()).find(|p| p.id == large.id).expect("announced");
    assert_eq!((announced.variant_of.as_str(), announced.options.len()), (base.id.as_str(), 2));
    server.stop().await;
}

async fn group_rules_are_refused_with_the_field_that_breaks_them(db: Db) {
    let server = Server::start(db).await;
    let (base, large, plain) = tshirt_and_mug(&server).await;
    let refused = |result: Result<Product, Status>| bad_fields(&result.expect_err("refused"));

    let missing = uuid::Uuid::now_v7().to_string();
    assert_eq!(refused(try_create(&server, tee("T1", &missing, &[("Size", "S")], 1)).await), ["product.variant_of"]);
    assert_eq!(refused(try_create(&server, tee("T2", &base.id, &[], 1)).await), ["product.options"]);
    assert_eq!(refused(try_create(&server, tee("T3", &base.id, &[("Colour", "red")], 1)).await), ["product.options"]);
    let of_variant = try_create(&server, tee("T4", &large.id, &[("Size", "S")], 1)).await.expect_err("two deep");
    assert_eq!(bad_fields(&of_variant), ["product.variant_of"]);
    assert!(of_variant.message().contains(&base.id), "names the base to use: {}", of_variant.message());
    let bare = try_create(&server, tee("T5", &plain.id, &[("Size", "S")], 1)).await.expect_err("base bare");
    assert!(bare.message().contains("without options"), "{}", bare.message());
    let many = &[("A", "1"), ("B", "2"), ("C", "3"), ("D", "4")];
    assert_eq!(refused(try_create(&server, tee("T6", "", many, 1)).await), ["product.options"]);
    assert_eq!(refused(try_create(&server, tee("T7", "", &[("Size", " ")], 1)).await), ["product.options[0].value"]);
    // Values are compared ignoring case: "l" is the L the group has.
    let twin = try_create(&server, tee("T8", &base.id, &[("size", "l ")], 1)).await.expect_err("twin");
    assert_eq!(twin.code(), Code::AlreadyExists, "{twin:?}");
    assert!(twin.message().contains(&large.id), "names its twin: {}", twin.message());

    // Changes keep the rules too: the base keeps its variants' option names and stays a base.
    assert_eq!(refused(try_update(&server, &base.id, Product::default(), &["options"]).await), ["product.options"]);
    let moved = try_update(&server, &base.id, tee("", &plain.id, &[("Size", "M")], 1), &["variant_of"]).await;
    assert_eq!(refused(moved), ["product.variant_of"]);
    let itself = try_update(&server, &large.id, tee("", &large.id, &[], 1), &["variant_of"]).await;
    assert_eq!(refused(itself), ["product.variant_of"]);
    let taken = try_update(&server, &large.id, tee("", "", &[("Size", "m")], 1), &["options"]).await;
    assert_eq!(taken.expect_err("the base's size").code(), Code::AlreadyExists);
    let relabelled = try_update(&server, &base.id, tee("", "", &[("Size", "Medium")], 1), &["options"]).await;
    assert_eq!(relabelled.expect("values change").options, options(&[("Size", "Medium")]));

    // A product sold on its own joins a group, and leaves it again.
    let joined = try_update(&server, &plain.id, tee("", &base.id, &[("Size", "XL")], 1), &["variant_of", "options"])
        .await
        .expect("joins");
    assert_eq!(choices(&joined), ["TEE-M", "TEE-L", "MUG-1"]);
    assert_eq!(skus(&server.list(ListProductsRequest::default(), None).await.expect("list").products), ["TEE-M"]);
    let left = try_update(&server, &plain.id, Product::default(), &["variant_of"]).await.expect("leaves");
    assert_eq!((left.variant_of.as_str(), left.variants.len()), ("", 0));
    assert_eq!(choices(&server.get(&base.id, None).await.expect("get")), ["TEE-M", "TEE-L"]);
    let listed = server.list(ListProductsRequest::default(), None).await.expect("list");
    assert_eq!(skus(&listed.products), ["MUG-1", "TEE-M"]);
    server.stop().await;
}

async fn a_group_is_reviewed_as_one(db: Db) {
    let server = Server::start(db).await;
    let (base, large, mug) = tshirt_and_mug(&server).await;
    server.confirmed("o1", "ann", &[&large.id]).await;
    server.confirmed("o2", "ben", &[&base.id, &mug.id]).await;
    let (ann, ben) = (server.shopper("ann"), server.shopper("ben"));
    let fits = server.review(&ann, &large.id, 5, "Fits").await.expect("ann reviews the L she bought");
    let shrank = server.review(&ben, &base.id, 2, "Shrank").await.expect("ben reviews the M");
    server.review(&ben, &mug.id, 4, "Solid").await.expect("ben reviews the mug");

    // Every size shows the T-shirt's rating and lists its reviews, each naming the size reviewed.
    assert_eq!((server.rating(&base.id).await, server.rating(&large.id).await), ((2, 3.5), (2, 3.5)));
    assert_eq!(server.rating(&mug.id).await, (1, 4.0));
    let page = server.reviews_of(None, &large.id, 10, "").await.expect("reviews");
    let of: Vec<(&str, &str)> = page.reviews.iter().map(|r| (r.title.as_str(), r.product_id.as_str())).collect();
    assert_eq!(of, [("Shrank", base.id.as_str()), ("Fits", large.id.as_str())]);
    assert_eq!(page.summary.expect("summary").stars, [0, 1, 0, 0, 1]);
    let best = || ListProductsRequest { order_by: "rating desc".into(), ..ListProductsRequest::default() };
    assert_eq!(skus(&server.list(best(), None).await.expect("list").products), ["MUG-1", "TEE-M"]);

    // Changed stars count for the group: 1 and 2 stars rank the T-shirt below the mug still, 5 and 5 above it.
    let stars = |rating| ProductReview { rating, ..ProductReview::default() };
    server.change(&ann, &large.id, &fits.id, stars(1), &["rating"]).await.expect("ann changes her mind");
    assert_eq!(server.rating(&large.id).await, (2, 1.5));
    server.change(&ann, &large.id, &fits.id, stars(5), &["rating"]).await.expect("and back");
    server.change(&ben, &base.id, &shrank.id, stars(5), &["rating"]).await.expect("ben too");
    assert_eq!(skus(&server.list(best(), None).await.expect("list").products), ["TEE-M", "MUG-1"]);

    // A size that leaves the group takes its reviews along, and brings them back.
    let alone = try_update(&server, &large.id, Product::default(), &["variant_of"]).await.expect("leaves");
    assert_eq!(alone.rating.map(|r| (r.count, r.average)), Some((1, 5.0)), "the answer counts its own");
    assert_eq!(server.rating(&base.id).await, (1, 5.0));
    assert_eq!(server.reviews_of(None, &base.id, 10, "").await.expect("reviews").reviews.len(), 1);
    try_update(&server, &large.id, tee("", &base.id, &[], 1), &["variant_of"]).await.expect("back");
    assert_eq!((server.rating(&base.id).await, server.rating(&large.id).await), ((2, 5.0), (2, 5.0)));

    // An account deleted, or a review, leave the group's totals.
    let deleted = UserDeleted { user_id: "ann".into(), ..UserDeleted::default() };
    server.bus.publish(envelope("ann-deleted", "user.deleted", "ann", &deleted)).await.expect("taken");
    assert_eq!(server.rating(&large.id).await, (1, 5.0));
    server.delete(&ben, &base.id, &shrank.id).await.expect("ben deletes his");
    assert_eq!((server.rating(&base.id).await, server.rating(&mug.id).await), ((0, 0.0), (1, 4.0)));
    server.stop().await;
}

async fn racing_editors_never_give_a_group_twins(db: Db) {
    let server = Server::start(db).await;
    let base = server.create(tee("TEE-M", "", &[("Size", "M")], 1900)).await;
    let attempts = (0..6).map(|n| try_create(&server, tee(&format!("TEE-L-{n}"), &base.id, &[("Size", "L")], 1900)));
    let outcomes = futures::future::join_all(attempts).await;
    let created = outcomes.iter().filter(|o| o.is_ok()).count();
    let twins = outcomes.iter().filter(|o| o.as_ref().is_err_and(|e| e.code() == Code::AlreadyExists)).count();
    assert_eq!((created, twins), (1, 5), "{outcomes:?}");
    assert_eq!(choices(&server.get(&base.id, None).await.expect("get")).len(), 2);
    server.stop().await;
}

on_both_engines!(
    a_group_is_listed_once_and_shows_its_choices,
    group_rules_are_refused_with_the_field_that_breaks_them,
    a_group_is_reviewed_as_one,
    racing_editors_never_give_a_group_twins,
);
