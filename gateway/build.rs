//! The dashboard's files are compiled in (rust-embed with `debug-embed`): rebuild when they change.

fn main() {
    println!("cargo:rerun-if-changed=../dashboard");
}
