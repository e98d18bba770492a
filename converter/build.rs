//! Bakes libtorch's directory into the rpath of every binary linking it
//! (`badexpert-convert`, the test and bench binaries), so that they run
//! without LD_LIBRARY_PATH. Shared by the packages that link libtorch
//! (`build = "../converter/build.rs"`).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
