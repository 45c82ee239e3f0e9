// The migrations are embedded by `sqlx::migrate!`, which cannot tell cargo about a new file on
// stable Rust: rebuild when the folder changes (sqlx's documented advice).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
