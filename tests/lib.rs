//! System tests: what no one crate can test alone. The deterministic simulation (`simulation.rs`)
//! runs the saga engine, routing, the store and the sandbox rails together under a manual clock
//! and one seeded random source. Tests that need the `railyard` binary (the kill -9 soak, `serve`
//! over HTTP, the dashboard in a browser) live with it in `cli/tests/`, where Cargo builds it for
//! them. This library is empty: the package exists for its tests.
