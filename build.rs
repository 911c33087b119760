//! Rebuilds the binary when the console's built assets change: `include_dir!` (src/http/console.rs)
//! embeds `console/dist` but, on stable Rust, cannot tell cargo which files it read.

fn main() {
    println!("cargo:rerun-if-changed=console/dist");
    println!("cargo:rerun-if-changed=build.rs");
}
