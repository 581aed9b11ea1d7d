//! The categories' methods of `CatalogService`: anyone lists them, editors (`catalog:write`) describe them.

use api::catalog::{
    Category, CreateCategoryRequest, CreateCategoryResponse, DeleteCategoryRequest, DeleteCategoryResponse,
    ListCategoriesResponse, UpdateCategoryRequest, UpdateCategoryResponse,
};
use platform::time::now_micros;

use super::CatalogApi;
use crate::domain::categories::{self, CategoryFields};
use crate::error::Error;
use crate::store::CategoryRow;

fn category_to_wire(row: CategoryRow) -> Category {
    Category {
        slug: row.slug,
        name: row.name,
        description: row.description,
        position: row.position,
        product_count: i32::try_from(row.product_count).unwrap_or(i32::MAX),
        described: row.described,
    }
}

fn fields_from_wire(c: &Category) -> CategoryFields {
    CategoryFields { name: c.name.clone(), description: c.description.clone(), position: c.position }
}

impl CatalogApi {
    /// Every category, the described ones first.
    pub(super) async fn every_category(&self) -> Result<ListCategoriesResponse, Error> {
        let categories = self.store.categories().await?;
        Ok(ListCategoriesResponse { categories: categories.into_iter().map(category_to_wire).collect() })
    }

    /// Describes the category `req` holds.
    pub(super) async fn describe_category(&self, req: CreateCategoryRequest) -> Result<CreateCategoryResponse, Error> {
        let given = req.category.unwrap_or_default();
        let slug = categories::check_slug("category.slug", &given.slug).map_err(|v| vec![v]);
        let fields = categories::validate(fields_from_wire(&given));
        let fields = match (slug, fields) {
            (Ok(()), Ok(fields)) => fields,
            (slug, fields) => {
                let violations = slug.err().into_iter().flatten().chain(fields.err().into_iter().flatten());
                return Err(Error::InvalidArgument(violations.collect()));
            }
        };
        let created = self.store.create_category(&given.slug, &fields, now_micros()).await?;
        tracing::info!(slug = %given.slug, "category described");
        Ok(CreateCategoryResponse { category: Some(category_to_wire(created)) })
    }

    /// Changes the fields of a described category that the mask names.
    pub(super) async fn redescribe_category(
        &self,
        req: UpdateCategoryRequest,
    ) -> Result<UpdateCategoryResponse, Error> {
        categories::check_slug("slug", &req.slug).map_err(Error::invalid)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let input = fields_from_wire(&req.category.unwrap_or_default());
        let updated = self
            .store
            .update_category(&req.slug, now_micros(), |current| {
                categories::apply_update_mask(current, &input, &paths).map_err(Error::InvalidArgument)
            })
            .await?;
        Ok(UpdateCategoryResponse { category: Some(category_to_wire(updated)) })
    }

    /// Deletes a category's description.
    pub(super) async fn undescribe_category(
        &self,
        req: DeleteCategoryRequest,
    ) -> Result<DeleteCategoryResponse, Error> {
        categories::check_slug("slug", &req.slug).map_err(Error::invalid)?;
        self.store.delete_category(&req.slug).await?;
        tracing::info!(slug = %req.slug, "category description deleted");
        Ok(DeleteCategoryResponse {})
    }
}
