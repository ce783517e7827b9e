//! Generates Gantry's own protos (`proto/`) with a vendored protoc, and a
//! descriptor set of every message a node can be sent (Envoy's API as
//! envoy-types ships it, plus Gantry's), for rendering resources as JSON.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("PROTOC", &protoc) };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../proto");
    let files = ["gantry/filters/http/plugins/v1/plugins.proto"];
    let paths: Vec<_> = files.iter().map(|f| root.join(f)).collect();
    for p in &paths {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    prost_build::Config::new()
        .btree_map(["."])
        .compile_protos(&paths, std::slice::from_ref(&root))?;
    descriptors(&protoc, &root, manifest)?;
    Ok(())
}

/// Gantry's protos and every Envoy proto, compiled into one
/// `FileDescriptorSet` (`$OUT_DIR/descriptors.bin`).
fn descriptors(protoc: &Path, root: &Path, manifest: &Path) -> Result<(), String> {
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-env-changed=GANTRY_ENVOY_PROTOS");
    let envoy = envoy_protos(manifest)?;
    // Where envoy-types keeps each repository's protos.
    let includes = [
        "data-plane-api",
        "xds",
        "googleapis",
        "protoc-gen-validate",
        "cel-spec/proto",
        "opentelemetry-proto",
        "client_model",
        "ratelimit/api",
    ];
    let mut inputs = Vec::new();
    collect(
        &envoy.join("data-plane-api"),
        Path::new("envoy"),
        &mut inputs,
    )?;
    collect(root, Path::new("gantry"), &mut inputs)?;
    inputs.sort();
    let out =
        PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?).join("descriptors.bin");
    let mut cmd = Command::new(protoc);
    cmd.arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg(format!("-I{}", root.display()));
    for i in includes {
        cmd.arg(format!("-I{}", envoy.join(i).display()));
    }
    cmd.arg(format!(
        "-I{}",
        protoc_bin_vendored::include_path()
            .map_err(|e| e.to_string())?
            .display()
    ));
    cmd.args(&inputs);
    let run = cmd.output().map_err(|e| format!("running protoc: {e}"))?;
    if !run.status.success() {
        return Err(format!(
            "protoc could not build the descriptor set:\n{}",
            String::from_utf8_lossy(&run.stderr)
        ));
    }
    Ok(())
}

/// Every `.proto` below `base/dir`, as paths relative to `base`.
fn collect(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(base.join(dir))
        .map_err(|e| format!("{}: {e}", base.join(dir).display()))?;
    for e in entries {
        let e = e.map_err(|e| e.to_string())?;
        let rel = dir.join(e.file_name());
        if e.file_type().map_err(|e| e.to_string())?.is_dir() {
            collect(base, &rel, out)?;
        } else if rel.extension().is_some_and(|x| x == "proto") {
            out.push(rel);
        }
    }
    Ok(())
}

/// The `proto/` folder of the envoy-types package this build uses: cargo
/// unpacks a dependency's sources before building its dependents, but
/// tells a build script nowhere where, so it is looked up by the version
/// in `Cargo.lock` under cargo's registry (or `vendor/`, for vendored
/// builds). `GANTRY_ENVOY_PROTOS` overrides the search.
fn envoy_protos(manifest: &Path) -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("GANTRY_ENVOY_PROTOS") {
        return Ok(PathBuf::from(dir));
    }
    let lock_path = manifest.join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    let lock =
        std::fs::read_to_string(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"envoy-types\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .ok_or("Cargo.lock names no envoy-types version")?;
    let package = format!("envoy-types-{version}");
    let mut candidates = vec![manifest.join("../vendor/envoy-types/proto")];
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home
        && let Ok(registries) = std::fs::read_dir(home.join("registry/src"))
    {
        for r in registries.flatten() {
            candidates.push(r.path().join(&package).join("proto"));
        }
    }
    candidates
        .into_iter()
        .find(|c| c.join("data-plane-api/envoy").is_dir())
        .ok_or_else(|| {
            format!("the protos of {package} were not found under cargo's registry; set GANTRY_ENVOY_PROTOS to its proto/ folder")
        })
}
