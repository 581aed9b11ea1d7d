//! Customers' reviews (`ReviewService`) over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set)
//! PostgreSQL: who may write one (a buyer, from the orders' events the catalog consumes), what a product shows of
//! them, changes and deletions by their authors and by staff, and an account's deletion.

mod harness;

use api::auth::UserDeleted;
use api::catalog::{
    CreateProductReviewRequest, GetProductReviewRequest, ListProductReviewsResponse, ListProductsRequest,
    ListReviewsRequest, ListReviewsResponse, Product, ProductReview, ReviewState, UpdateProductRequest,
};
use api::mercato::orders::v1::OrderConfirmed;
use platform::config::ReviewModeration;
use platform::db::Db;
use platform::events::EventBus;
use tonic::{Code, Request, Status};

use harness::*;

/// (title, mine) of each review of a page, in the order listed.
fn titles(page: &ListProductReviewsResponse) -> Vec<(&str, bool)> {
    page.reviews.iter().map(|r| (r.title.as_str(), r.mine)).collect()
}

async fn buyers_review_what_they_bought(db: Db) {
    let server = Server::start(db).await;
    let tea = server.create(product("TEA-1", "Sencha", "tea", 900)).await;
    let (ada, bob) = (server.shopper("ada"), server.shopper("bob"));
    assert_eq!(server.rating(&tea.id).await, (0, 0.0), "no reviews yet");

    // Only a buyer may review: Ada has not bought it yet.
    let refused = server.review(&ada, &tea.id, 5, "Lovely").await.expect_err("not a buyer");
    assert_eq!((refused.code(), reason(&refused)), (Code::FailedPrecondition, "NOT_A_BUYER".to_owned()));
    server.confirmed("o-ada", "ada", &[&tea.id, &tea.id]).await;
    let lovely = server.review(&ada, &tea.id, 5, "Lovely").await.expect("a buyer reviews");
    assert_eq!(
        (lovely.rating, lovely.title.as_str(), lovely.author_name.as_str(), lovely.mine, lovely.state()),
        (5, "Lovely", "Lovely fan", true, ReviewState::Published),
        "a shop that does not moderate publishes it as written"
    );
    let again = server.review(&ada, &tea.id, 1, "Changed my mind").await.expect_err("one review each");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    assert!(again.message().contains(&lovely.id), "names the review to change: {again:?}");

    // Bad input is refused, naming each field; callers without the scope or a token are refused before.
    let mut bad = ProductReview { rating: 0, title: "x".repeat(121), ..ProductReview::default() };
    bad.author_name = "Ada\nL.".into();
    let request = with_token(CreateProductReviewRequest { product_id: tea.id.clone(), review: Some(bad) }, &bob);
    let status = server.reviews.clone().create_product_review(request).await.expect_err("bad");
    assert_eq!(bad_fields(&status), ["review.rating", "review.title", "review.author_name"]);
    let scopeless = server.review(&server.customer(), &tea.id, 4, "Nice").await.expect_err("no scope");
    assert_eq!(scopeless.code(), Code::PermissionDenied);
    let request = Request::new(CreateProductReviewRequest { product_id: tea.id.clone(), review: None });
    assert_eq!(
        server.reviews.clone().create_product_review(request).await.expect_err("anonymous").code(),
        Code::Unauthenticated
    );
    let unknown = server.review(&ada, "no-such-product", 4, "Nice").await.expect_err("unknown product");
    assert_eq!(unknown.code(), Code::NotFound);

    // Bob bought it too and is less taken with it. The product shows both, in its own read and in lists.
    server.confirmed("o-bob", "bob", &[&tea.id]).await;
    let meh = server.review(&bob, &tea.id, 2, "Meh").await.expect("review");
    assert_eq!(server.rating(&tea.id).await, (2, 3.5));
    let listed = server.list(ListProductsRequest::default(), None).await.expect("list").products;
    assert_eq!(listed[0].rating.as_ref().map(|r| (r.count, r.average)), Some((2, 3.5)));

    // Anyone reads them, newest first, with how many gave each number of stars; the author sees which is theirs.
    let page = server.reviews_of(None, &tea.id, 0, "").await.expect("anonymous list");
    assert_eq!(titles(&page), [("Meh", false), ("Lovely", false)]);
    let summary = page.summary.clone().expect("summary");
    assert_eq!((summary.count, summary.average, summary.stars), (2, 3.5, vec![0, 1, 0, 0, 1]));
    assert_eq!(
        titles(&server.reviews_of(Some(&ada), &tea.id, 0, "").await.expect("list")),
        [("Meh", false), ("Lovely", true)]
    );
    let first = server.reviews_of(None, &tea.id, 1, "").await.expect("page 1");
    assert_eq!(titles(&first), [("Meh", false)]);
    let second = server.reviews_of(None, &tea.id, 1, &first.next_page_token).await.expect("page 2");
    assert_eq!((titles(&second), second.next_page_token.as_str()), (vec![("Lovely", false)], ""));
    let bad_token = server.reviews_of(None, &tea.id, 0, "not a token!").await.expect_err("bad token");
    assert_eq!(bad_fields(&bad_token), ["page_token"]);
    let one = GetProductReviewRequest { product_id: tea.id.clone(), review_id: meh.id.clone() };
    let got = server.reviews.clone().get_product_review(Request::new(one)).await.expect("get").into_inner().review;
    assert_eq!(got.map(|r| (r.title, r.rating)), Some(("Meh".to_owned(), 2)));

    // Ada changes her stars only; the average follows. Nobody changes or deletes another's review.
    let four = ProductReview { rating: 4, title: "ignored".into(), ..ProductReview::default() };
    let changed = server.change(&ada, &tea.id, &lovely.id, four.clone(), &["rating"]).await.expect("change");
    assert_eq!((changed.rating, changed.title.as_str()), (4, "Lovely"), "only what the mask names");
    assert_eq!(server.rating(&tea.id).await, (2, 3.0));
    assert_eq!(
        server.change(&bob, &tea.id, &lovely.id, four.clone(), &["rating"]).await.expect_err("not his").code(),
        Code::NotFound
    );
    assert_eq!(
        bad_fields(&server.change(&ada, &tea.id, &lovely.id, four.clone(), &["product_id"]).await.expect_err("mask")),
        ["update_mask"]
    );
    let zero = ProductReview { rating: 0, ..ProductReview::default() };
    assert_eq!(
        bad_fields(&server.change(&ada, &tea.id, &lovely.id, zero, &["rating"]).await.expect_err("0 stars")),
        ["review.rating"]
    );
    assert_eq!(server.delete(&bob, &tea.id, &lovely.id).await.expect_err("not his").code(), Code::NotFound);

    // Bob deletes his own; staff delete one that breaks the shop's rules. The product's rating follows each.
    server.delete(&bob, &tea.id, &meh.id).await.expect("his own");
    assert_eq!(server.rating(&tea.id).await, (1, 4.0));
    assert_eq!(server.delete(&bob, &tea.id, &meh.id).await.expect_err("gone").code(), Code::NotFound);
    server.delete(&server.editor(), &tea.id, &lovely.id).await.expect("moderated");
    assert_eq!(server.rating(&tea.id).await, (0, 0.0));
    assert!(server.submitted(1).await.is_empty(), "published as written: nothing waits, nobody is told");
    assert!(server.reviews_of(None, &tea.id, 0, "").await.expect("list").reviews.is_empty());

    // An editor's change of the product keeps its rating; a product taken off sale hides its reviews from
    // customers, not from staff.
    server.review(&bob, &tea.id, 3, "Fine").await.expect("Bob again");
    let off = UpdateProductRequest {
        id: tea.id.clone(),
        product: Some(Product { active: false, ..Product::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["active".into()] }),
    };
    let updated = server.client.clone().update_product(with_token(off, &server.admin())).await.expect("update");
    let rating = updated.into_inner().product.and_then(|p| p.rating).map(|r| (r.count, r.average));
    assert_eq!(rating, Some((1, 3.0)), "the rating is not the editor's to reset");
    assert_eq!(server.reviews_of(None, &tea.id, 0, "").await.expect_err("off sale").code(), Code::NotFound);
    assert_eq!(
        titles(&server.reviews_of(Some(&server.editor()), &tea.id, 0, "").await.expect("staff")),
        [("Fine", false)]
    );
    server.stop().await;
}

async fn cancelled_orders_and_deleted_accounts_count_for_nothing(db: Db) {
    let server = Server::start(db).await;
    let tea = server.create(product("TEA-2", "Oolong", "tea", 1200)).await;
    let cup = server.create(product("CUP-1", "Cup", "kitchen", 700)).await;

    // Carol cancelled her order: she did not buy the tea after all.
    server.confirmed("o-carol", "carol", &[&tea.id]).await;
    server.cancelled("o-carol", "carol", &[&tea.id]).await;
    let carol = server.review(&server.shopper("carol"), &tea.id, 1, "Never came").await.expect_err("cancelled");
    assert_eq!(reason(&carol), "NOT_A_BUYER");
    // Dave's cancellation overtook its confirmation: the late confirmation does not make it a purchase.
    server.cancelled("o-dave", "dave", &[&tea.id]).await;
    server.confirmed("o-dave", "dave", &[&tea.id]).await;
    assert_eq!(
        reason(&server.review(&server.shopper("dave"), &tea.id, 1, "Hm").await.expect_err("cancelled")),
        "NOT_A_BUYER"
    );
    // Another order of his that was not cancelled counts, and a redelivered confirmation changes nothing.
    server.confirmed("o-dave-2", "dave", &[&tea.id]).await;
    server.confirmed("o-dave-2", "dave", &[&tea.id]).await;
    server.review(&server.shopper("dave"), &tea.id, 4, "Good").await.expect("a buyer after all");

    // Erin deletes her account: her reviews go, with what they added to each product.
    server.confirmed("o-erin", "erin", &[&tea.id, &cup.id]).await;
    let erin = server.shopper("erin");
    server.review(&erin, &tea.id, 1, "Bitter").await.expect("review");
    server.review(&erin, &cup.id, 5, "Perfect cup").await.expect("review");
    assert_eq!((server.rating(&tea.id).await, server.rating(&cup.id).await), ((2, 2.5), (1, 5.0)));
    let deleted = UserDeleted { user_id: "erin".into(), ..UserDeleted::default() };
    let event = envelope("erin-deleted", "user.deleted", "erin", &deleted);
    server.bus.publish(event.clone()).await.expect("taken");
    server.bus.publish(event).await.expect("a redelivery is taken too");
    assert_eq!((server.rating(&tea.id).await, server.rating(&cup.id).await), ((1, 4.0), (0, 0.0)), "once");
    assert_eq!(titles(&server.reviews_of(None, &tea.id, 0, "").await.expect("list")), [("Good", false)]);
    // Nor is she a buyer any more (her purchases went too).
    assert_eq!(reason(&server.review(&erin, &cup.id, 5, "Again").await.expect_err("erased")), "NOT_A_BUYER");

    // A garbled event is refused (RabbitMQ retries it, then dead-letters it), not taken as nothing.
    let mut garbled = envelope("bad-1", "order.confirmed", "o-x", &OrderConfirmed::default());
    garbled.data = vec![0xff, 0xff, 0xff];
    server.bus.publish(garbled).await.expect_err("refused");
    server.stop().await;
}

/// `order_by=rating desc`: the best average first, the most reviewed first among equals, products without
/// reviews last; read a product a page, so every page token carries a rating key the database must agree with.
async fn the_best_rated_come_first(db: Db) {
    let server = Server::start(db).await;
    let mut ids = Vec::new();
    for sku in ["NONE", "FOURS", "ONE-FIVE", "TWO-FIVES", "THREE"] {
        ids.push(server.create(product(sku, sku, "tea", 500)).await.id);
    }
    let [fours, one_five, two_fives, three] = [1, 2, 3, 4].map(|i| ids[i].clone());
    for (customer, ratings) in [("ann", [4, 5, 5, 3]), ("ben", [4, 0, 5, 0]), ("cat", [5, 0, 0, 0])] {
        let bought = [&fours, &one_five, &two_fives, &three];
        server.confirmed(&format!("o-{customer}"), customer, &bought.map(String::as_str)).await;
        for (product, rating) in bought.iter().zip(ratings) {
            if rating > 0 {
                server.review(&server.shopper(customer), product, rating, "Said so").await.expect("review");
            }
        }
    }
    // fours: 4, 4, 5 (4.33); one_five: 5; two_fives: 5, 5; three: 3; none: no reviews.
    let names = |products: &[Product]| products.iter().map(|p| p.sku.clone()).collect::<Vec<_>>();
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let request = ListProductsRequest {
            order_by: "rating desc".into(),
            page_size: 1,
            page_token: token,
            ..ListProductsRequest::default()
        };
        let page = server.list(request, None).await.expect("page");
        seen.extend(names(&page.products));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ["TWO-FIVES", "ONE-FIVE", "FOURS", "THREE", "NONE"]);
    let request = ListProductsRequest { order_by: "rating".into(), ..ListProductsRequest::default() };
    let ascending = server.list(request, None).await.expect("list").products;
    assert_eq!(names(&ascending), ["NONE", "THREE", "FOURS", "ONE-FIVE", "TWO-FIVES"]);
    assert_eq!(ascending[2].rating.as_ref().map(|r| (r.count, r.average)), Some((3, 4.33)));

    // Staff read every product's reviews, newest first, the lowest rated if they like; a page at a time.
    let all_reviews = |max_rating: i32, page_size: i32, page_token: String, token: String| {
        let request = ListReviewsRequest { page_size, page_token, max_rating, ..ListReviewsRequest::default() };
        let mut reviews = server.reviews.clone();
        async move { Ok::<_, Status>(reviews.list_reviews(with_token(request, &token)).await?.into_inner()) }
    };
    let seen =
        |page: &ListReviewsResponse| page.reviews.iter().map(|r| (r.product_id.clone(), r.rating)).collect::<Vec<_>>();
    let first = all_reviews(4, 2, String::new(), server.editor()).await.expect("staff");
    assert_eq!(seen(&first), [(fours.clone(), 4), (three.clone(), 3)], "Ben's four, then Ann's three");
    let rest = all_reviews(4, 2, first.next_page_token.clone(), server.editor()).await.expect("page 2");
    assert_eq!((seen(&rest), rest.next_page_token.as_str()), (vec![(fours.clone(), 4)], ""));
    assert_eq!(all_reviews(0, 0, String::new(), server.editor()).await.expect("all").reviews.len(), 7);
    let bad = all_reviews(6, -1, String::new(), server.editor()).await.expect_err("bad");
    assert_eq!(bad_fields(&bad), ["page_size", "max_rating"]);
    let customer = all_reviews(0, 0, String::new(), server.shopper("ann")).await.expect_err("customers");
    assert_eq!(customer.code(), Code::PermissionDenied);
    server.stop().await;
}

/// A shop that moderates (`MERCATO_REVIEW_MODERATION=pre`): reviews written or changed wait for staff, seen only
/// by their authors and staff, counted in no rating, until published.
async fn a_moderating_shop_shows_reviews_once_staff_publish_them(db: Db) {
    let server = Server::start_with(db, ReviewModeration::Pre).await;
    let tea = server.create(product("TEA-9", "Genmaicha", "tea", 800)).await;
    let (ada, bob, editor) = (server.shopper("ada"), server.shopper("bob"), server.editor());
    server.confirmed("o-ada", "ada", &[&tea.id]).await;
    server.confirmed("o-bob", "bob", &[&tea.id]).await;

    // Written, it waits: its author and staff see it; customers' lists, the rating and anyone else do not.
    let lovely = server.review(&ada, &tea.id, 5, "Lovely").await.expect("written");
    assert_eq!(lovely.state(), ReviewState::Pending);
    // The shop hears of it (notifications mail `review.submitted` to its inbox).
    let told = server.submitted(1).await;
    assert_eq!(
        told.iter()
            .map(|s| (s.review_id.as_str(), s.product_name.as_str(), s.rating, s.title.as_str()))
            .collect::<Vec<_>>(),
        [(lovely.id.as_str(), "Genmaicha", 5, "Lovely")]
    );
    assert_eq!(server.rating(&tea.id).await, (0, 0.0));
    let public = server.reviews_of(None, &tea.id, 0, "").await.expect("list");
    assert_eq!((public.reviews.len(), public.summary.map(|s| s.count)), (0, Some(0)));
    assert_eq!(server.review_as(Some(&ada), &tea.id, &lovely.id).await.expect("hers").state(), ReviewState::Pending);
    assert_eq!(server.review_as(Some(&editor), &tea.id, &lovely.id).await.expect("staff").title, "Lovely");
    for stranger in [Some(bob.as_str()), None] {
        let hidden = server.review_as(stranger, &tea.id, &lovely.id).await.expect_err("waits");
        assert_eq!(hidden.code(), Code::NotFound);
    }

    // Staff find what waits, and only they publish.
    let meh = server.review(&bob, &tea.id, 2, "Meh").await.expect("written");
    let waiting = |state: ReviewState| {
        let request = ListReviewsRequest { state: state.into(), ..ListReviewsRequest::default() };
        let (mut reviews, editor) = (server.reviews.clone(), editor.clone());
        async move {
            let page = reviews.list_reviews(with_token(request, &editor)).await.expect("staff list").into_inner();
            page.reviews.into_iter().map(|r| r.title).collect::<Vec<_>>()
        }
    };
    assert_eq!(waiting(ReviewState::Pending).await, ["Meh", "Lovely"]);
    assert!(waiting(ReviewState::Published).await.is_empty());
    let request = ListReviewsRequest { state: 7, ..ListReviewsRequest::default() };
    let bad = server.reviews.clone().list_reviews(with_token(request, &editor)).await.expect_err("no such state");
    assert_eq!(bad_fields(&bad), ["state"]);
    let refused = server.publish(&ada, &tea.id, &lovely.id).await.expect_err("customers do not publish");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let published = server.publish(&editor, &tea.id, &lovely.id).await.expect("published");
    assert_eq!((published.state(), published.rating), (ReviewState::Published, 5));
    assert_eq!(server.publish(&editor, &tea.id, &lovely.id).await.expect("again"), published, "published once");
    assert_eq!(server.rating(&tea.id).await, (1, 5.0));
    let public = server.reviews_of(None, &tea.id, 0, "").await.expect("list");
    assert_eq!(titles(&public), [("Lovely", false)]);
    assert_eq!(public.summary.map(|s| s.stars), Some(vec![0, 0, 0, 0, 1]));
    assert_eq!(waiting(ReviewState::Pending).await, ["Meh"]);
    let unknown = server.publish(&editor, &tea.id, "no-such-review").await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);

    // A change waits again, out of the rating until published; staff delete what they will not publish.
    let three = ProductReview { rating: 3, ..ProductReview::default() };
    let changed = server.change(&ada, &tea.id, &lovely.id, three, &["rating"]).await.expect("changed");
    assert_eq!(changed.state(), ReviewState::Pending);
    let told = server.submitted(3).await;
    assert_eq!(
        told.iter().map(|s| (s.title.as_str(), s.rating)).collect::<Vec<_>>(),
        [("Lovely", 5), ("Meh", 2), ("Lovely", 3)]
    );
    assert_eq!(server.rating(&tea.id).await, (0, 0.0));
    assert!(server.reviews_of(None, &tea.id, 0, "").await.expect("list").reviews.is_empty());
    server.publish(&editor, &tea.id, &lovely.id).await.expect("published again");
    assert_eq!(server.rating(&tea.id).await, (1, 3.0));
    server.delete(&editor, &tea.id, &meh.id).await.expect("not published, deleted");
    assert_eq!(server.rating(&tea.id).await, (1, 3.0), "it never counted");
    assert!(waiting(ReviewState::Pending).await.is_empty());
    // An account erased with a review waiting takes nothing from the rating.
    server.review(&bob, &tea.id, 1, "Still meh").await.expect("written");
    let deleted = UserDeleted { user_id: "bob".into(), ..UserDeleted::default() };
    server.bus.publish(envelope("bob-deleted", "user.deleted", "bob", &deleted)).await.expect("taken");
    assert_eq!(server.rating(&tea.id).await, (1, 3.0));
    assert!(waiting(ReviewState::Pending).await.is_empty(), "erased");
    server.stop().await;
}

on_both_engines!(
    a_moderating_shop_shows_reviews_once_staff_publish_them,
    buyers_review_what_they_bought,
    cancelled_orders_and_deleted_accounts_count_for_nothing,
    the_best_rated_come_first,
);
