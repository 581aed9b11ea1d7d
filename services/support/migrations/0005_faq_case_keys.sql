-- Case-folded copies of an FAQ entry's question and answer, written by the service with Unicode lower-casing
-- (SQLite's LOWER folds ASCII letters only, so "überweisung" missed "Überweisung"). The search reads these.
-- Entries written before this migration get theirs when the service next starts (question_key = '' marks
-- them: a question is never empty).
ALTER TABLE faq_entries ADD COLUMN question_key TEXT NOT NULL DEFAULT '';
ALTER TABLE faq_entries ADD COLUMN answer_key TEXT NOT NULL DEFAULT '';
