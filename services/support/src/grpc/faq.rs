//! The FAQ's methods of `SupportService`: anyone reads the published entries, agents write them.

use api::mercato::support::v1::{
    CreateFaqEntryRequest, CreateFaqEntryResponse, DeleteFaqEntryRequest, DeleteFaqEntryResponse, FaqEntry,
    GetFaqEntryRequest, GetFaqEntryResponse, ListFaqEntriesRequest, ListFaqEntriesResponse, UpdateFaqEntryRequest,
    UpdateFaqEntryResponse,
};
use platform::error::FieldViolation;
use platform::time::{now_micros, timestamp};

use super::SupportApi;
use crate::domain::faq::{self, EntryInput, FaqCursor};
use crate::domain::{self, page_size};
use crate::error::Error;
use crate::store::{self, FaqQuery};

fn entry_to_wire(e: store::FaqEntry) -> FaqEntry {
    FaqEntry {
        id: e.id,
        question: e.question,
        answer: e.answer,
        category: e.category,
        position: e.position,
        published: e.published,
        create_time: Some(timestamp(e.create_time)),
        update_time: Some(timestamp(e.update_time)),
    }
}

fn entry_from_wire(e: FaqEntry) -> EntryInput {
    EntryInput {
        question: e.question,
        answer: e.answer,
        category: e.category,
        position: e.position,
        published: e.published,
    }
}

impl SupportApi {
    /// A page of the FAQ; with `drafts`, unpublished entries too.
    pub(super) async fn list_faq(
        &self,
        drafts: bool,
        req: ListFaqEntriesRequest,
    ) -> Result<ListFaqEntriesResponse, Error> {
        let mut violations = Vec::new();
        let limit = page_size(req.page_size).map_err(|v| violations.push(v)).unwrap_or_default();
        let after = FaqCursor::decode(&req.page_token).map_err(|v| violations.push(v)).unwrap_or_default();
        if let Err(v) = faq::validate_category_filter(&req.category) {
            violations.push(v);
        }
        if let Err(v) = faq::validate_query(&req.query) {
            violations.push(v);
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        // One more than the page: whether there is a next page.
        let query = FaqQuery {
            drafts,
            category: (!req.category.is_empty()).then_some(req.category),
            text: (!req.query.is_empty()).then_some(req.query),
            after,
            limit: limit + 1,
        };
        let entries = self.store.list_faq_entries(&query).await?;
        let (entries, next_page_token) = platform::paging::page(entries, limit, |last| {
            FaqCursor { category: last.category.clone(), position: last.position, id: last.id.clone() }.encode()
        });
        Ok(ListFaqEntriesResponse { entries: entries.into_iter().map(entry_to_wire).collect(), next_page_token })
    }

    /// One entry; a draft only with `drafts`.
    pub(super) async fn get_faq(&self, drafts: bool, req: GetFaqEntryRequest) -> Result<GetFaqEntryResponse, Error> {
        let id = req.id;
        domain::validate_id("id", &id).map_err(Error::invalid)?;
        match self.store.faq_entry(&id).await? {
            Some(entry) if entry.published || drafts => Ok(GetFaqEntryResponse { entry: Some(entry_to_wire(entry)) }),
            _ => Err(Error::faq_entry_not_found(&id)),
        }
    }

    /// Writes a new entry.
    pub(super) async fn create_faq(&self, req: CreateFaqEntryRequest) -> Result<CreateFaqEntryResponse, Error> {
        let Some(entry) = req.entry else {
            return Err(Error::invalid(FieldViolation::new("entry", "is required")));
        };
        let fields = faq::validate_entry(&entry_from_wire(entry), "entry.").map_err(Error::InvalidArgument)?;
        let id = uuid::Uuid::now_v7().to_string();
        let entry = self.store.create_faq_entry(&id, &fields, now_micros()).await?;
        tracing::info!(faq_entry_id = %id, category = %entry.category, "FAQ entry written");
        Ok(CreateFaqEntryResponse { entry: Some(entry_to_wire(entry)) })
    }

    /// Changes the fields of an entry the update mask names.
    pub(super) async fn update_faq(&self, req: UpdateFaqEntryRequest) -> Result<UpdateFaqEntryResponse, Error> {
        domain::validate_id("id", &req.id).map_err(Error::invalid)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        faq::check_update_mask(&paths).map_err(Error::InvalidArgument)?;
        let input = entry_from_wire(req.entry.unwrap_or_default());
        let entry = self
            .store
            .update_faq_entry(&req.id, now_micros(), |current| {
                faq::apply_update_mask(&current.fields(), &input, &paths).map_err(Error::InvalidArgument)
            })
            .await?;
        Ok(UpdateFaqEntryResponse { entry: Some(entry_to_wire(entry)) })
    }

    /// Removes an entry.
    pub(super) async fn delete_faq(&self, req: DeleteFaqEntryRequest) -> Result<DeleteFaqEntryResponse, Error> {
        let id = req.id;
        domain::validate_id("id", &id).map_err(Error::invalid)?;
        if !self.store.delete_faq_entry(&id).await? {
            return Err(Error::faq_entry_not_found(&id));
        }
        tracing::info!(faq_entry_id = %id, "FAQ entry removed");
        Ok(DeleteFaqEntryResponse {})
    }
}
