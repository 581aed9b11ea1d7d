//! Rebuilds the crate when a migration or a template changes: `sqlx::migrate!` and `include_str!` embed them
//! at compile time.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=templates");
}
