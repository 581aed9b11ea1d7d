//! The products of a variant group, as each of its products shows them (`Product.variants`).

use api::catalog::{Product, ProductVariant, RatingSummary};
use api::common::Money;

use super::{CatalogApi, options_to_wire};
use crate::error::Error;
use crate::store::VariantRow;

impl CatalogApi {
    /// Fills the `variants` of each of `products` that belongs to a group of more than one product, with one query
    /// for them all; `writer` (catalog:write) sees the group's products not for sale too. Products without
    /// options cost nothing: every product of a group has options.
    pub(super) async fn with_variants(&self, products: &mut [Product], writer: bool) -> Result<(), Error> {
        let group_of = |p: &Product| if p.variant_of.is_empty() { p.id.clone() } else { p.variant_of.clone() };
        let mut group_ids: Vec<String> = products.iter().filter(|p| !p.options.is_empty()).map(group_of).collect();
        group_ids.sort();
        group_ids.dedup();
        let ids: Vec<&str> = group_ids.iter().map(String::as_str).collect();
        let groups = self.store.groups_of(&ids).await?;
        for product in products.iter_mut().filter(|p| !p.options.is_empty()) {
            let Some(group) = groups.get(&group_of(product)).filter(|g| g.len() > 1) else {
                continue;
            };
            // A group is rated as one: its totals are kept on its base.
            if let Some(base) = group.iter().find(|v| v.id == v.group_id) {
                product.rating = Some(RatingSummary {
                    count: i32::try_from(base.rating_count).unwrap_or(i32::MAX),
                    average: crate::domain::reviews::average(base.rating_count, base.rating_sum),
                    stars: Vec::new(),
                });
            }
            product.variants = group.iter().filter(|v| v.active || writer).cloned().map(variant_to_wire).collect();
        }
        Ok(())
    }
}

fn variant_to_wire(row: VariantRow) -> ProductVariant {
    let options = crate::store::stored_options(&row.id, &row.options);
    ProductVariant {
        id: row.id,
        sku: row.sku,
        name: row.name,
        options: options_to_wire(options),
        price: Some(Money { currency: row.price_currency, amount_minor: row.price_amount_minor }),
        active: row.active,
        available: i32::try_from(row.available.max(0)).unwrap_or(i32::MAX),
    }
}
