//! The wishlist's rules, free of I/O: how many products one holds, and how a saved product is shown from what
//! the catalog says about it now.

use crate::domain::{Offer, Price};

/// Most products on one wishlist.
pub const MAX_WISHLIST_ITEMS: i64 = 100;

/// A product on a wishlist, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SavedItem {
    /// The product.
    pub product_id: String,
    /// Its sku when saved.
    pub sku: String,
    /// Its name when saved.
    pub name: String,
    /// When it was saved, microseconds since the epoch.
    pub create_time: i64,
}

/// A saved product as the catalog sells it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WishedItem {
    /// The product.
    pub product_id: String,
    /// The catalog's sku now, or the saved one when the product is no longer sold.
    pub sku: String,
    /// The catalog's name now, or the saved one when the product is no longer sold.
    pub name: String,
    /// What a unit costs now; `None` when the product is not for sale.
    pub price: Option<Price>,
    /// Units that can be ordered now.
    pub available: i64,
    /// When it was saved.
    pub create_time: i64,
}

/// `saved` as `offer` (the catalog's answer now) shows it: a product the catalog no longer sells keeps the name
/// it was saved with, has no price and no units.
pub fn shown(saved: SavedItem, offer: Offer) -> WishedItem {
    match offer {
        Offer::OnSale(listing) => WishedItem {
            product_id: saved.product_id,
            sku: listing.sku,
            name: listing.name,
            price: Some(listing.price),
            available: listing.in_stock.max(0),
            create_time: saved.create_time,
        },
        Offer::Inactive | Offer::Missing => WishedItem {
            product_id: saved.product_id,
            sku: saved.sku,
            name: saved.name,
            price: None,
            available: 0,
            create_time: saved.create_time,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Listing;

    fn saved() -> SavedItem {
        SavedItem { product_id: "p1".into(), sku: "OLD-1".into(), name: "Old name".into(), create_time: 7 }
    }

    #[test]
    fn a_product_for_sale_shows_what_it_is_and_costs_now() {
        let price = Price { currency: "EUR".into(), amount_minor: 1450 };
        let listing = Listing { sku: "NEW-1".into(), name: "New name".into(), price: price.clone(), in_stock: 3 };
        let item = shown(saved(), Offer::OnSale(listing));
        assert_eq!(
            (item.sku.as_str(), item.name.as_str(), item.price, item.available),
            ("NEW-1", "New name", Some(price), 3)
        );
        assert_eq!(item.create_time, 7, "saved when it was saved");
    }

    #[test]
    fn a_product_off_sale_keeps_its_saved_name_without_price_or_units() {
        for offer in [Offer::Inactive, Offer::Missing] {
            let item = shown(saved(), offer);
            assert_eq!(
                (item.sku.as_str(), item.name.as_str(), item.price, item.available),
                ("OLD-1", "Old name", None, 0)
            );
        }
    }

    #[test]
    fn oversold_stock_shows_as_none() {
        let price = Price { currency: "EUR".into(), amount_minor: 1 };
        let listing = Listing { sku: "S".into(), name: "N".into(), price, in_stock: -2 };
        assert_eq!(shown(saved(), Offer::OnSale(listing)).available, 0);
    }
}
