-- Which of a country's tax rates a product's price includes (the orders service keeps the rates): standard, or
-- reduced where the country has a reduced rate (food and books in many countries).
ALTER TABLE products ADD COLUMN tax_class TEXT NOT NULL DEFAULT 'standard' CHECK (tax_class IN ('standard', 'reduced'));
