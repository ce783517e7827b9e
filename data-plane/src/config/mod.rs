//! Compiles Envoy resources into runtime tables (written next).
