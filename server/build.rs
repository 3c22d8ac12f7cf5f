//! Rebuilds the server when the built web app changes: rust-embed embeds `target/web/dist` when the crate
//! compiles, and cargo would not otherwise know that the crate depends on that folder (a release build
//! after a frontend-only change kept serving the old app).

fn main() {
    let dist = std::path::Path::new("../target/web/dist");
    // A missing path would make cargo rerun this script at every build; an empty folder is what
    // `#[allow_missing]` serves anyway (the "web app not built" page).
    let _ = std::fs::create_dir_all(dist);
    println!("cargo:rerun-if-changed=../target/web/dist");
    println!("cargo:rerun-if-changed=build.rs");
}
