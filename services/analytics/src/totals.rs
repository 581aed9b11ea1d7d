//! What a batch of events adds to the aggregates, summed per aggregate row before anything is written: a batch
//! of orders of one day and currency is one `daily_sales` update, not one per order. Pure; the store writes a
//! [`Totals`] in the transaction that records its events.

use std::collections::BTreeMap;

use crate::domain::{CodeFigures, Day, Effect, Funnel, ProductLabel, SalesFigures};

/// The sum of many events' [`Effect`]s, keyed as the aggregate tables are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Sales figures by day and currency (`daily_sales`).
    pub sales: BTreeMap<(Day, String), SalesFigures>,
    /// Product figures by day, product and currency (`daily_product_sales`).
    pub products: BTreeMap<(Day, String, String), ProductCounts>,
    /// The latest label seen of each product (`products`), by product id.
    pub labels: BTreeMap<String, SeenLabel>,
    /// The cart funnel by day (`daily_carts`).
    pub funnel: BTreeMap<Day, Funnel>,
    /// Discount codes' figures by day, code and currency (`daily_discount_codes`).
    pub codes: BTreeMap<(Day, String, String), CodeFigures>,
}

/// One product's figures of one day and currency, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProductCounts {
    /// Units on confirmed orders.
    pub units_sold: i64,
    /// Line totals of confirmed orders.
    pub sold_minor: i64,
    /// Units on cancelled orders.
    pub units_cancelled: i64,
    /// Line totals of cancelled orders.
    pub cancelled_minor: i64,
    /// Units sent back.
    pub units_returned: i64,
}

/// A product's sku and name as of the event that showed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenLabel {
    /// The sku and name.
    pub label: ProductLabel,
    /// The event's time, in microseconds since the epoch.
    pub time: i64,
    /// The event's id: the tie-break between events of the same time.
    pub event_id: String,
}

impl SeenLabel {
    /// Whether this label wins over `other`: the latest by (time, event id), as the stored one is replaced.
    fn supersedes(&self, other: &SeenLabel) -> bool {
        (self.time, &self.event_id) >= (other.time, &other.event_id)
    }
}

impl Totals {
    /// Adds the effect of the event `event_id` that happened at `event_time` (microseconds).
    pub fn add(&mut self, effect: &Effect, event_time: i64, event_id: &str) {
        if let Some((currency, figures)) = &effect.sales {
            self.sales.entry((effect.day, currency.clone())).or_default().add(figures);
        }
        for product in &effect.products {
            let counts =
                self.products.entry((effect.day, product.product_id.clone(), product.currency.clone())).or_default();
            // Saturating, like every sum here: absurd amounts must not panic the task that records batches.
            counts.units_sold = counts.units_sold.saturating_add(product.units_sold);
            counts.sold_minor = counts.sold_minor.saturating_add(product.sold_minor);
            counts.units_cancelled = counts.units_cancelled.saturating_add(product.units_cancelled);
            counts.cancelled_minor = counts.cancelled_minor.saturating_add(product.cancelled_minor);
            counts.units_returned = counts.units_returned.saturating_add(product.units_returned);
        }
        for label in &effect.labels {
            let seen = SeenLabel { label: label.clone(), time: event_time, event_id: event_id.to_owned() };
            match self.labels.get(&label.product_id) {
                Some(kept) if !seen.supersedes(kept) => {}
                _ => {
                    self.labels.insert(label.product_id.clone(), seen);
                }
            }
        }
        if let Some(funnel) = &effect.funnel {
            let day = self.funnel.entry(effect.day).or_default();
            day.carts_started = day.carts_started.saturating_add(funnel.carts_started);
            day.orders_from_carts = day.orders_from_carts.saturating_add(funnel.orders_from_carts);
        }
        if let Some((code, currency, figures)) = &effect.code {
            self.codes.entry((effect.day, code.clone(), currency.clone())).or_default().add(figures);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Amount, Fact, OrderLine, effect};

    fn eur(minor: i64) -> Amount {
        Amount { currency: "EUR".into(), minor }
    }

    fn line(product_id: &str, name: &str, quantity: i64, minor: i64) -> OrderLine {
        OrderLine {
            product_id: product_id.into(),
            sku: format!("SKU-{product_id}"),
            name: name.into(),
            quantity,
            line_total: eur(minor),
        }
    }

    fn order(lines: Vec<OrderLine>, total: i64) -> Fact {
        Fact::OrderConfirmed {
            total: eur(total),
            discount_minor: 0,
            shipping_minor: 0,
            tax_minor: 0,
            discount_code: String::new(),
            lines,
            from_cart: true,
        }
    }

    #[test]
    fn a_batch_sums_each_aggregate_row_once() {
        let mut totals = Totals::default();
        totals.add(&effect(&order(vec![line("a", "Apple", 2, 300)], 300), 7), 10, "e1");
        totals.add(&effect(&order(vec![line("a", "Apple", 1, 150), line("b", "Pear", 1, 90)], 240), 7), 11, "e2");
        totals.add(&effect(&Fact::PaymentCaptured { amount: eur(540) }, 7), 12, "e3");
        totals.add(
            &effect(&Fact::OrderCancelled { refunded: eur(300), lines: vec![line("a", "Apple", 2, 300)] }, 8),
            13,
            "e4",
        );
        totals.add(&effect(&Fact::CartItemAdded { cart_was_empty: true }, 7), 14, "e5");

        assert_eq!(totals.sales.len(), 2, "one row per day and currency: {:?}", totals.sales);
        assert_eq!(
            totals.sales[&(7, "EUR".to_owned())],
            SalesFigures { orders: 2, gross_minor: 540, captured_minor: 540, ..SalesFigures::default() }
        );
        assert_eq!(
            totals.sales[&(8, "EUR".to_owned())],
            SalesFigures { cancelled_orders: 1, cancelled_minor: 300, ..SalesFigures::default() }
        );
        let apple = |day: Day| totals.products[&(day, "a".to_owned(), "EUR".to_owned())];
        assert_eq!((apple(7).units_sold, apple(7).sold_minor, apple(7).units_cancelled), (3, 450, 0));
        assert_eq!((apple(8).units_cancelled, apple(8).cancelled_minor, apple(8).units_sold), (2, 300, 0));
        assert_eq!(totals.products.len(), 3);
        assert_eq!(totals.funnel[&7], Funnel { carts_started: 1, orders_from_carts: 2 });
        assert_eq!(totals.funnel.len(), 1);
    }

    #[test]
    fn the_latest_label_wins_whatever_order_the_events_come_in() {
        let renamed = |name: &str| effect(&order(vec![line("a", name, 1, 1)], 1), 7);
        let events = [("Apple", 10, "e1"), ("Green apple", 12, "e0"), ("Red apple", 12, "e2"), ("Old", 5, "e9")];
        for rotation in 0..events.len() {
            let mut totals = Totals::default();
            for (name, time, id) in events.iter().cycle().skip(rotation).take(events.len()) {
                totals.add(&renamed(name), *time, id);
            }
            let seen = &totals.labels["a"];
            assert_eq!(
                (seen.label.name.as_str(), seen.time, seen.event_id.as_str()),
                ("Red apple", 12, "e2"),
                "by time, then event id (rotation {rotation})"
            );
        }
    }
}
