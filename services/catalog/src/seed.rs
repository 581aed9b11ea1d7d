//! Demo products, so that a fresh `mercato up` has a shop to browse.

use crate::domain::{self, Price, ProductInput, ProductOption, TaxClass};
use crate::error::Error;
use crate::store::Store;

/// (sku, name, description, price in euro cents, units on hand)
type Demo = (&'static str, &'static str, &'static str, i64, i64);

const CATEGORIES: &[(&str, &[Demo])] = &[
    (
        "coffee",
        &[
            (
                "COF-ETH-250",
                "Ethiopia Yirgacheffe, 250 g",
                "Washed, light roast. Jasmine, bergamot and lemon.",
                1450,
                120,
            ),
            (
                "COF-COL-250",
                "Colombia Huila, 250 g",
                "Medium roast with notes of caramel, red apple and cocoa.",
                1290,
                85,
            ),
            (
                "COF-BRA-1000",
                "Brazil Cerrado, 1 kg",
                "Nutty, chocolatey espresso base roasted for milk drinks.",
                3490,
                40,
            ),
            (
                "COF-KEN-250",
                "Kenya Nyeri AA, 250 g",
                "Bright and juicy: blackcurrant, grapefruit, brown sugar.",
                1690,
                60,
            ),
            (
                "COF-DEC-250",
                "Swiss Water Decaf, 250 g",
                "Chemical-free decaffeinated Peru, smooth and sweet.",
                1350,
                35,
            ),
            (
                "COF-ESP-500",
                "House Espresso Blend, 500 g",
                "Dark roast blend for a syrupy shot with a thick crema.",
                1990,
                150,
            ),
        ],
    ),
    (
        "tea",
        &[
            (
                "TEA-SEN-100",
                "Japanese Sencha, 100 g",
                "Steamed green tea from Shizuoka, grassy and umami-rich.",
                1190,
                70,
            ),
            ("TEA-ASS-250", "Assam Breakfast, 250 g", "Malty black tea, strong enough for milk.", 890, 110),
            ("TEA-EGR-100", "Earl Grey Supreme, 100 g", "Ceylon black tea with bergamot oil and cornflowers.", 950, 90),
            ("TEA-OOL-100", "Tie Guan Yin Oolong, 100 g", "Lightly oxidised oolong with an orchid aroma.", 1490, 25),
            ("TEA-MAT-30", "Ceremonial Matcha, 30 g", "Stone-ground tencha from Uji for whisking.", 2290, 30),
            ("TEA-ROO-200", "Rooibos Vanilla, 200 g", "Caffeine-free red bush tea with Madagascar vanilla.", 790, 65),
        ],
    ),
    (
        "books",
        &[
            (
                "BK-WCA-001",
                "The World Atlas of Coffee",
                "James Hoffmann's guide from bean to cup, 2nd edition.",
                3200,
                18,
            ),
            ("BK-TEA-002", "The Story of Tea", "History, cultivation and brewing of the world's teas.", 2800, 12),
            ("BK-SFA-003", "Salt, Fat, Acid, Heat", "Samin Nosrat on the four elements of good cooking.", 3000, 22),
            ("BK-FLB-004", "Flour Water Salt Yeast", "Ken Forkish's method for artisan bread and pizza.", 2700, 9),
            ("BK-ROB-005", "The Rust Programming Language", "The official book, covering Rust 2021.", 3900, 15),
            (
                "BK-DDI-006",
                "Designing Data-Intensive Applications",
                "Martin Kleppmann on reliable, scalable systems.",
                4500,
                20,
            ),
        ],
    ),
    (
        "kitchen",
        &[
            (
                "KIT-V60-02",
                "Pour-Over Dripper, Size 02",
                "Ceramic cone dripper with spiral ribs for even extraction.",
                2490,
                45,
            ),
            ("KIT-GRN-HND", "Hand Grinder", "Stainless steel conical burrs, 40 click settings.", 8900, 14),
            ("KIT-KTL-GSN", "Gooseneck Kettle, 1 l", "Precise pour control, works on induction.", 4990, 26),
            ("KIT-SCL-01", "Brewing Scale with Timer", "0.1 g resolution, auto-tare, USB-C rechargeable.", 3490, 38),
            ("KIT-FRP-08", "French Press, 8 cups", "Borosilicate glass and a four-layer steel filter.", 2990, 52),
            ("KIT-TPT-06", "Cast Iron Teapot, 0.6 l", "Enamel-lined tetsubin with a removable infuser.", 5490, 11),
        ],
    ),
    (
        "games",
        &[
            ("GM-CAT-001", "Settlers of the Isle", "Trade, build and settle: the classic for 3-4 players.", 3999, 24),
            ("GM-TKR-002", "Ticket to Ride Europe", "Claim railway routes across the continent.", 4499, 17),
            ("GM-AZL-003", "Azul", "Draft and place tiles to decorate the royal palace.", 3499, 30),
            ("GM-COD-004", "Codenames", "Word-association party game for 4-8 players.", 1999, 55),
            ("GM-PDM-005", "Pandemic", "Cooperate to stop four diseases from spreading.", 3799, 13),
            ("GM-CRD-006", "Deck of Playing Cards", "Linen-finish cards with a tuck box.", 699, 200),
        ],
    ),
    (
        "stationery",
        &[
            ("ST-NBK-A5D", "Dotted Notebook A5", "192 numbered pages of 100 g/m² paper, lay-flat binding.", 1890, 75),
            (
                "ST-FPN-EF",
                "Fountain Pen, Extra Fine",
                "Steel nib, converter and two ink cartridges included.",
                2590,
                28,
            ),
            ("ST-INK-50", "Blue-Black Ink, 50 ml", "Water-resistant ink for fountain pens.", 1190, 42),
            ("ST-PNC-12", "Graphite Pencils, 12 pack", "Cedar pencils in grades from 4H to 6B.", 990, 64),
            ("ST-WKP-52", "Weekly Planner 2025", "Week-on-two-pages layout with a linen cover.", 2190, 33),
            ("ST-ENV-25", "Cotton Envelopes, 25 pack", "C6 envelopes in warm white, 120 g/m².", 690, 5),
        ],
    ),
];

/// A group of variants: its category, the sku and name every variant's start with, description, price in euro
/// cents, the option's name, and each variant's value and units on hand (the first is the base).
type DemoGroup =
    (&'static str, &'static str, &'static str, &'static str, i64, &'static str, &'static [(&'static str, i64)]);

const GROUPS: &[DemoGroup] = &[
    (
        "apparel",
        "AP-TEE",
        "Mercato T-shirt",
        "Organic cotton, 180 g/m², regular fit, with the logo on the chest.",
        2490,
        "Size",
        &[("S", 20), ("M", 35), ("L", 30), ("XL", 12)],
    ),
    (
        "apparel",
        "AP-TOTE",
        "Canvas Tote Bag",
        "Heavy cotton canvas with long handles and an inner pocket.",
        1590,
        "Colour",
        &[("Natural", 40), ("Black", 25)],
    ),
];

/// The demo's categories of food and books: taxed at the reduced rate where a country has one.
const REDUCED_CATEGORIES: &[&str] = &["coffee", "tea", "books"];

/// Inserts the demo products when the catalog is empty; returns how many were inserted. Products whose
/// sku already exists (a concurrent seed) are skipped, so seeding is idempotent.
pub async fn insert_demo(store: &Store) -> Result<usize, Error> {
    if store.count_products().await? > 0 {
        return Ok(0);
    }
    let mut inserted = 0;
    for (category, products) in CATEGORIES {
        for &(sku, name, description, cents, on_hand) in *products {
            let tax_class = if REDUCED_CATEGORIES.contains(category) { TaxClass::Reduced } else { TaxClass::Standard };
            let input = ProductInput {
                sku: sku.to_owned(),
                name: name.to_owned(),
                description: description.to_owned(),
                price: Some(Price { currency: "EUR".to_owned(), amount_minor: cents }),
                category: (*category).to_owned(),
                active: true,
                tax_class: Some(tax_class),
                ..ProductInput::default()
            };
            if insert_with_stock(store, input, on_hand).await?.is_some() {
                inserted += 1;
            }
        }
    }
    for &(category, sku, name, description, cents, option, variants) in GROUPS {
        let mut base = String::new();
        for &(value, on_hand) in variants {
            let input = ProductInput {
                sku: format!("{sku}-{}", value.to_uppercase()),
                name: format!("{name}, {value}"),
                description: description.to_owned(),
                price: Some(Price { currency: "EUR".to_owned(), amount_minor: cents }),
                category: category.to_owned(),
                active: true,
                tax_class: Some(TaxClass::Standard),
                variant_of: base.clone(),
                options: vec![ProductOption { name: option.to_owned(), value: value.to_owned() }],
            };
            // A concurrent seed made the group: it makes the rest of it too.
            let Some(id) = insert_with_stock(store, input, on_hand).await? else { break };
            if base.is_empty() {
                base = id;
            }
            inserted += 1;
        }
    }
    Ok(inserted)
}

/// Inserts a demo product with `on_hand` units; its id, or `None` when its sku exists (a concurrent seed).
async fn insert_with_stock(store: &Store, input: ProductInput, on_hand: i64) -> Result<Option<String>, Error> {
    let fields = domain::validate_product(input).map_err(Error::InvalidArgument)?;
    let id = uuid::Uuid::now_v7().to_string();
    match store.create_product(&id, fields, platform::time::now_micros()).await {
        Ok(_) => {}
        Err(Error::AlreadyExists(_)) => return Ok(None),
        Err(e) => return Err(e),
    }
    store.adjust_inventory(&id, on_hand, "initial stock", "seed", platform::time::now_micros()).await?;
    Ok(Some(id))
}
