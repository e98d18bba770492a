//! Bakes libtorch's directory into the rpath of every binary linking it
//! (`badexpert-convert`, the test and bench binaries), so that they run
//! without LD_LIBRARY_PATH, and links a CUDA libtorch's `libtorch_cuda`
//! for real: nothing references its symbols directly, so the linker's
//! `--as-needed` would drop it and CUDA would stay unavailable. Shared by
//! the packages that link libtorch (`build = "../converter/build.rs"`).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        let cuda = std::path::Path::new(&lib).join("libtorch_cuda.so");
        println!("cargo:rerun-if-changed={}", cuda.display());
        if cuda.is_file() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
