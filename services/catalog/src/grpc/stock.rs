//! The restocking list of `CatalogService` (`ListStockLevels`): those who manage stock (`inventory:write`, checked
//! by the method's access rule) see every product's stock, fewest units available first.

use api::catalog::{ListStockLevelsRequest, ListStockLevelsResponse, StockLevel};

use super::{CatalogApi, inventory_to_wire};
use crate::domain::stock;
use crate::error::Error;
use crate::store::StockLevelRow;

fn stock_level_to_wire(row: StockLevelRow) -> StockLevel {
    let stock = row.stock();
    StockLevel {
        inventory: Some(inventory_to_wire(row.product_id, stock)),
        sku: row.sku,
        name: row.name,
        active: row.active,
    }
}

impl CatalogApi {
    /// One page of the stock levels `req` asks for.
    pub(super) async fn stock_levels(&self, req: ListStockLevelsRequest) -> Result<ListStockLevelsResponse, Error> {
        let query = stock::stock_query(req.page_size, &req.page_token, req.available_below, req.include_inactive)
            .map_err(Error::InvalidArgument)?;
        // One more than the page tells whether another follows.
        let rows = self.store.stock_levels(&query, query.limit + 1).await?;
        let (rows, next_page_token) = platform::paging::page(rows, query.limit, |last| last.cursor().encode());
        Ok(ListStockLevelsResponse {
            stock_levels: rows.into_iter().map(stock_level_to_wire).collect(),
            next_page_token,
        })
    }
}
