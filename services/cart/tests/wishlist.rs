//! Wishlists over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL, against the
//! stand-in catalog of `harness/`: products saved and shown as the catalog sells them now, refused with a reason,
//! at most 100, private, and erased with their account.

use api::mercato::cart::v1::{
    AddWishlistItemRequest, ListWishlistItemsRequest, RemoveWishlistItemRequest, WishlistItem,
};
use platform::db::Db;
use platform::events::EventBus;
use tonic::{Code, Request, Status};

mod harness;

use harness::*;

async fn save(server: &Server, token: &str, product_id: &str) -> Result<WishlistItem, Status> {
    let request = with_token(AddWishlistItemRequest { product_id: product_id.into() }, token);
    Ok(server.wishlist.clone().add_wishlist_item(request).await?.into_inner().item.unwrap_or_default())
}

async fn saved(server: &Server, token: &str) -> Vec<WishlistItem> {
    let request = with_token(ListWishlistItemsRequest {}, token);
    server.wishlist.clone().list_wishlist_items(request).await.expect("list").into_inner().items
}

async fn unsave(server: &Server, token: &str, product_id: &str) -> Result<(), Status> {
    let request = with_token(RemoveWishlistItemRequest { product_id: product_id.into() }, token);
    server.wishlist.clone().remove_wishlist_item(request).await?;
    Ok(())
}

fn ids(items: &[WishlistItem]) -> Vec<&str> {
    items.iter().map(|i| i.product_id.as_str()).collect()
}

async fn saved_products_show_as_the_catalog_sells_them_now(db: Db) {
    let server = Server::start(db).await;
    let (alice, bob) = (server.customer("alice"), server.customer("bob"));
    let coffee = save(&server, &alice, COFFEE).await.expect("save coffee");
    assert_eq!(
        (coffee.sku.as_str(), coffee.name.as_str(), coffee.for_sale, coffee.available),
        ("COF-1", "Coffee", true, 500)
    );
    assert_eq!(coffee.price, Some(eur(1450)));
    save(&server, &alice, TEA).await.expect("save tea");
    let again = save(&server, &alice, COFFEE).await.expect("saved again");
    assert_eq!(again.create_time, coffee.create_time, "kept where it was");
    assert_eq!(ids(&saved(&server, &alice).await), [TEA, COFFEE], "the latest saved first");

    // What it costs and whether it can be ordered are the catalog's answers now.
    server.catalog.change(COFFEE, |product, stock| {
        product.price = Some(eur(1390));
        *stock = 0;
    });
    let now = saved(&server, &alice).await;
    assert_eq!((now[1].price.clone(), now[1].available, now[1].for_sale), (Some(eur(1390)), 0, true));
    // Off sale: no price, no units, and the name it was saved with.
    server.catalog.change(COFFEE, |product, _| {
        product.name = "Coffee, renamed".into();
        product.active = false;
    });
    let off = saved(&server, &alice).await;
    assert_eq!((off[1].name.as_str(), off[1].price.clone(), off[1].for_sale), ("Coffee", None, false));

    // Each customer's own: bob sees none of alice's and cannot take any off.
    assert!(saved(&server, &bob).await.is_empty());
    unsave(&server, &bob, TEA).await.expect("nothing to take off is no error");
    assert_eq!(saved(&server, &alice).await.len(), 2);
    unsave(&server, &alice, TEA).await.expect("take tea off");
    unsave(&server, &alice, TEA).await.expect("again");
    assert_eq!(ids(&saved(&server, &alice).await), [COFFEE]);
    server.stop().await;
}

async fn what_cannot_be_saved_is_refused_with_a_reason(db: Db) {
    let server = Server::start(db).await;
    let alice = server.customer("alice");
    let off_sale = save(&server, &alice, RETIRED).await.expect_err("not for sale");
    assert_eq!((off_sale.code(), reason(&off_sale)), (Code::FailedPrecondition, "PRODUCT_INACTIVE".to_owned()));
    assert_eq!(save(&server, &alice, "p-unknown").await.expect_err("unknown").code(), Code::NotFound);
    assert_eq!(bad_fields(&save(&server, &alice, "").await.expect_err("no id")), ["product_id"]);
    assert_eq!(bad_fields(&unsave(&server, &alice, &"p".repeat(101)).await.expect_err("long id")), ["product_id"]);
    let anonymous = Request::new(AddWishlistItemRequest { product_id: COFFEE.into() });
    assert_eq!(
        server.wishlist.clone().add_wishlist_item(anonymous).await.expect_err("anonymous").code(),
        Code::Unauthenticated
    );
    // A token that may read but not change carts (an API key with fewer scopes) reads its list only.
    let reader = server.issuer.token("alice", &["orders:read"], &["customer"]);
    assert_eq!(save(&server, &reader, COFFEE).await.expect_err("no cart:write").code(), Code::PermissionDenied);
    assert!(saved(&server, &reader).await.is_empty(), "nothing was saved");
    server.stop().await;
}

async fn a_wishlist_holds_at_most_100_products_even_when_saved_at_once(db: Db) {
    let server = Server::start(db).await;
    let alice = server.customer("alice");
    for i in 0..110 {
        server.catalog.put(&format!("p{i:03}"), &format!("S-{i}"), "Thing", "EUR", 100, 1);
    }
    for i in 0..95 {
        save(&server, &alice, &format!("p{i:03}")).await.expect("within the limit");
    }
    // Ten at once for the last five places: five are saved, five refused.
    let racing = (95..105).map(|i| format!("p{i:03}")).collect::<Vec<_>>();
    let outcomes = futures::future::join_all(racing.iter().map(|id| save(&server, &alice, id))).await;
    let full: Vec<&Status> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert_eq!(full.len(), 5, "{full:?}");
    assert!(full.iter().all(|status| reason(status) == "WISHLIST_FULL"), "{full:?}");
    assert_eq!(saved(&server, &alice).await.len(), 100);
    save(&server, &alice, "p000").await.expect("a product saved already is no new one");
    save(&server, &server.customer("bob"), "p109").await.expect("another customer's list is separate");
    server.stop().await;
}

async fn a_deleted_accounts_wishlist_is_erased(db: Db) {
    let server = Server::start(db).await;
    let (ada, bob) = (server.customer("ada"), server.customer("bob"));
    save(&server, &ada, COFFEE).await.expect("ada's");
    save(&server, &bob, TEA).await.expect("bob's");
    let deleted = account_deleted("ada");
    server.bus.publish(deleted).await.expect("taken");
    assert!(saved(&server, &ada).await.is_empty());
    assert_eq!(ids(&saved(&server, &bob).await), [TEA], "others keep theirs");
    server.stop().await;
}

on_both_engines!(
    saved_products_show_as_the_catalog_sells_them_now,
    what_cannot_be_saved_is_refused_with_a_reason,
    a_wishlist_holds_at_most_100_products_even_when_saved_at_once,
    a_deleted_accounts_wishlist_is_erased,
);
