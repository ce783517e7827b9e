//! Cross-process end-to-end tests (control plane, proxies, a real Envoy)
//! live in this crate's `tests/`; they arrive with the xDS and proxy issues.
//! Control-plane tests that need only `gantry-cp` live in
//! `control-plane/tests/`.
