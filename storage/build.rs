//! Compiles the C helper that gives INCRBYFLOAT Redis's exact long-double arithmetic.
fn main() {
    println!("cargo:rerun-if-changed=src/float.c");
    cc::Build::new()
        .file("src/float.c")
        .opt_level(2)
        .compile("ringkv_float");
}
