//! Compiles the GLSL compute shaders in `shaders/` (and the one WGSL shader) to SPIR-V
//! with naga (pure Rust, no shaderc), and writes `shaders.rs` into `OUT_DIR`: one `&[u32]` constant of SPIR-V
//! words per shader, named after its file in upper case (`matmul.comp` → `MATMUL`).
//! A line `#include "file.glsl"` in a shader is replaced by that file of `shaders/` (naga's
//! GLSL front end has no preprocessor includes): the elementwise shaders share their ops
//! this way.

use std::fmt::Write as _;
use std::path::Path;

use naga::back::spv;
use naga::front::glsl;
use naga::valid::{Capabilities, ValidationFlags, Validator};

const SHADERS: [&str; 10] = [
    "binary", "binary4", "unary", "unary4", "fill", "reduce", "matmul", "softmax", "strided",
    "rows",
];

/// Shaders written in WGSL (`shaders/{name}.wgsl`), with the capabilities they need:
/// naga's WGSL front end is the one with cooperative matrices.
const WGSL_SHADERS: [(&str, Capabilities); 1] = [(
    "matmul_coop",
    Capabilities::IMMEDIATES
        .union(Capabilities::COOPERATIVE_MATRIX)
        .union(Capabilities::SHADER_FLOAT16)
        .union(Capabilities::SUBGROUP),
)];

/// `source` with every `#include "name"` line replaced by `shaders/name` (one level).
fn expand_includes(dir: &Path, source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    for line in source.lines() {
        let included = line
            .trim()
            .strip_prefix("#include \"")
            .and_then(|rest| rest.strip_suffix('"'));
        match included {
            Some(name) => {
                let path = dir.join(name);
                println!("cargo:rerun-if-changed={}", path.display());
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                out.push_str(&text);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn compile(name: &str, source: &str) -> Result<Vec<u32>, String> {
    let mut frontend = glsl::Frontend::default();
    let module = frontend
        .parse(&glsl::Options::from(naga::ShaderStage::Compute), source)
        .map_err(|e| format!("{name}.comp: parse error: {}", e.emit_to_string(source)))?;
    let mut module = module;
    for (_, f) in module.functions.iter_mut() {
        workgroup_barriers(&mut f.body);
    }
    for ep in &mut module.entry_points {
        workgroup_barriers(&mut ep.function.body);
    }
    let info = Validator::new(ValidationFlags::all(), Capabilities::IMMEDIATES)
        .validate(&module)
        .map_err(|e| format!("{name}.comp: invalid: {}", e.emit_to_string(source)))?;
    let options = spv::Options {
        lang_version: (1, 0),
        // Every shader guards its own indices; workgroup memory is written before it is
        // read; loops are bounded by push constants.
        bounds_check_policies: naga::proc::BoundsCheckPolicies::default(),
        zero_initialize_workgroup_memory: spv::ZeroInitializeWorkgroupMemoryMode::None,
        force_loop_bounding: false,
        ..spv::Options::default()
    };
    let pipeline = spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: "main".into(),
    };
    spv::write_vec(&module, &info, &options, Some(&pipeline))
        .map_err(|e| format!("{name}.comp: SPIR-V output failed: {e}"))
}

/// SPIR-V 1.3 (cooperative matrices and the subgroup built-ins need it) of a WGSL shader.
fn compile_wgsl(name: &str, source: &str, caps: Capabilities) -> Result<Vec<u32>, String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| format!("{name}.wgsl: parse error: {}", e.emit_to_string(source)))?;
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| format!("{name}.wgsl: invalid: {}", e.emit_to_string(source)))?;
    let options = spv::Options {
        lang_version: (1, 3),
        bounds_check_policies: naga::proc::BoundsCheckPolicies::default(),
        zero_initialize_workgroup_memory: spv::ZeroInitializeWorkgroupMemoryMode::None,
        force_loop_bounding: false,
        use_storage_input_output_16: false,
        ..spv::Options::default()
    };
    let pipeline = spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: "main".into(),
    };
    spv::write_vec(&module, &info, &options, Some(&pipeline))
        .map_err(|e| format!("{name}.wgsl: SPIR-V output failed: {e}"))
}

/// naga's GLSL front end turns `barrier()` into a barrier with every flag, whose
/// subgroup flag makes the SPIR-V writer emit a *subgroup*-scope execution barrier. A
/// GLSL compute `barrier()` synchronises the workgroup and its shared memory: rewrite it
/// to exactly that.
fn workgroup_barriers(block: &mut naga::Block) {
    use naga::Statement as S;
    for statement in block.iter_mut() {
        match statement {
            S::ControlBarrier(flags) => *flags = naga::Barrier::WORK_GROUP,
            S::Block(b) => workgroup_barriers(b),
            S::If { accept, reject, .. } => {
                workgroup_barriers(accept);
                workgroup_barriers(reject);
            }
            S::Loop {
                body, continuing, ..
            } => {
                workgroup_barriers(body);
                workgroup_barriers(continuing);
            }
            S::Switch { cases, .. } => {
                for case in cases {
                    workgroup_barriers(&mut case.body);
                }
            }
            _ => {}
        }
    }
}

fn main() {
    let dir = Path::new("shaders");
    let mut out = String::from("// Generated by build.rs from shaders/*.comp: SPIR-V words.\n");
    for name in SHADERS {
        let path = dir.join(format!("{name}.comp"));
        println!("cargo:rerun-if-changed={}", path.display());
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let source = expand_includes(dir, &source);
        let words = compile(name, &source).unwrap_or_else(|e| panic!("{e}"));
        let _ = writeln!(
            out,
            "pub(crate) const {}: &[u32] = &{words:?};",
            name.to_uppercase()
        );
    }
    for (name, caps) in WGSL_SHADERS {
        let path = dir.join(format!("{name}.wgsl"));
        println!("cargo:rerun-if-changed={}", path.display());
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let words = compile_wgsl(name, &source, caps).unwrap_or_else(|e| panic!("{e}"));
        let _ = writeln!(
            out,
            "pub(crate) const {}: &[u32] = &{words:?};",
            name.to_uppercase()
        );
    }
    let dest = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("shaders.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("cannot write {}: {e}", dest.display()));
}
