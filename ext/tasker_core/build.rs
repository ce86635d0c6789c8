//! macOS links a Ruby extension against symbols the running Ruby provides:
//! leave them undefined, to be looked up when Ruby loads the library.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("macos") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-undefined,dynamic_lookup");
    }
}
