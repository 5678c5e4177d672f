//! Host-side bindings for the Spin interfaces in `host/wit/`.
//!
//! Generated once here so every factor module implements the traits of the same generated types.

wasmtime::component::bindgen!({
    path: "wit",
    world: "bazaar:runner/spin-host",
    imports: { default: async },
    with: {
        "fermyon:spin/key-value@2.0.0.store": crate::factors::key_value::StoreHandle,
        "fermyon:spin/sqlite@2.0.0.connection": crate::factors::sqlite::ConnectionHandle,
        "spin:sqlite/sqlite@3.0.0.connection": crate::factors::sqlite::ConnectionHandle,
    },
});

pub use fermyon::spin as spin2;
pub use spin::sqlite::sqlite as sqlite3;
