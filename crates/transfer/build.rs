//! Compiles the libibverbs shim of the rdma transport (feature `rdma` only).

fn main() {
    #[cfg(feature = "rdma")]
    {
        println!("cargo:rerun-if-changed=src/transport/rdma/shim.c");
        cc::Build::new()
            .file("src/transport/rdma/shim.c")
            .warnings(true)
            .compile("mooncake_rdma_shim");
        println!("cargo:rustc-link-lib=ibverbs");
    }
}
