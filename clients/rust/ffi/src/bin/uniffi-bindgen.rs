//! UniFFI's bindings generator, at the version this crate is built with: it reads the
//! interface from the built library (`--library target/.../libconfab_ffi.so`) and writes the
//! Kotlin, Swift or Python side.

fn main() {
    uniffi::uniffi_bindgen_main()
}
