-- How the customer chose to have the order shipped: the name of the order's shipping rate (orders'
-- ShippingRateService) when it was placed; '' for shipments of shops that charge no shipping.
ALTER TABLE shipments ADD COLUMN shipping_method TEXT NOT NULL DEFAULT '';
