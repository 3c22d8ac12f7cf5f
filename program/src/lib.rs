//! Checks that an uploaded program is a WASI preview 1 command module that every worker kind can run.
//!
//! The server calls [`check`] on every upload and refuses the module with the error's message (a 4xx)
//! when it fails. The rules:
//!
//! - the bytes are a valid core WebAssembly module using only [`FEATURES`] (what both wasmtime and
//!   browsers run, minus proposals that would make replicas disagree, such as relaxed SIMD and threads);
//! - every import is a function of `wasi_snapshot_preview1` with exactly the preview 1 signature;
//! - it exports a `_start` function taking and returning nothing, and a memory named `memory`.
//!
//! Architecture Invariant: a module that passes [`check`] links against the host functions of
//! `distributivecom-wasi` on every worker, because the signatures come from the same table.

pub mod conformance;
pub mod instrument;

use distributivecom_wasi::{FUNCTIONS, MODULE_NAME, ValType, lookup};
use wasmparser::{
    Encoding, ExternalKind, FuncType, Parser, Payload, TypeRef, ValType as WasmValType, Validator, WasmFeatures,
};

/// The WebAssembly features programs may use: WebAssembly 2.0 (bulk memory, reference types, SIMD,
/// multi-value, sign extension, saturating conversions) plus tail calls and extended constants, which
/// current compilers emit and all our hosts support.
pub const FEATURES: WasmFeatures =
    WasmFeatures::WASM2.union(WasmFeatures::TAIL_CALL).union(WasmFeatures::EXTENDED_CONST);

/// What we learned about a program that passed the checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramInfo {
    /// The WASI functions it imports, in import order.
    pub imports: Vec<String>,
    /// Its memory's initial size in 64 KiB pages.
    pub memory_initial_pages: u64,
    /// Its memory's declared maximum in pages, if any.
    pub memory_maximum_pages: Option<u64>,
}

/// Why a program was refused. The messages are shown to the uploader as they are.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProgramError {
    #[error("the program is empty")]
    Empty,
    #[error("not a WebAssembly module: the file does not start with the `\\0asm` magic bytes")]
    NotWasm,
    #[error(
        "this is a WebAssembly component (WASI preview 2); only WASI preview 1 command modules are \
         supported (for Rust, build with --target wasm32-wasip1)"
    )]
    Component,
    #[error("invalid WebAssembly at byte offset {offset}: {message}")]
    Invalid { offset: usize, message: String },
    #[error("import {module}.{name} is not allowed: programs may import only functions of wasi_snapshot_preview1")]
    ForbiddenImport { module: String, name: String },
    #[error("import wasi_snapshot_preview1.{name} is not a function")]
    NonFunctionImport { name: String },
    #[error("import wasi_snapshot_preview1.{name} is not a WASI preview 1 function")]
    UnknownWasiFunction { name: String },
    #[error("import wasi_snapshot_preview1.{name} has type {found}, but WASI preview 1 defines it as {expected}")]
    WrongSignature { name: String, found: String, expected: String },
    #[error(
        "the program exports no `_start` function{}",
        if *.reactor { ": it looks like a WASI reactor (it exports `_initialize`); only command modules can run" } else { "" }
    )]
    NoStart { reactor: bool },
    #[error("the exported `_start` must take no parameters and return nothing")]
    BadStart,
    #[error("the program exports no memory named `memory`")]
    NoMemory,
    #[error("the program could not be instrumented: {0}")]
    Instrumentation(String),
}

/// Checks a program; see the crate documentation for the rules.
pub fn check(bytes: &[u8]) -> Result<ProgramInfo, ProgramError> {
    if bytes.is_empty() {
        return Err(ProgramError::Empty);
    }
    if !bytes.starts_with(b"\0asm") {
        return Err(ProgramError::NotWasm);
    }
    // The preamble's last two bytes are the layer: 0 for core modules, 1 for components.
    if bytes.get(6..8) == Some(&[1, 0]) {
        return Err(ProgramError::Component);
    }
    let types = Validator::new_with_features(FEATURES).validate_all(bytes).map_err(invalid)?;

    let mut imports = Vec::new();
    let mut has_start = false;
    let mut start_ok = false;
    let mut has_initialize = false;
    let mut has_memory = false;
    let mut memory_initial_pages = 0;
    let mut memory_maximum_pages = None;
    let mut function_types: Vec<u32> = Vec::new();
    let mut imported_functions: u32 = 0;
    let mut memories = Vec::new();

    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::Version { encoding: Encoding::Component, .. } => return Err(ProgramError::Component),
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(invalid)?;
                    if import.module != MODULE_NAME {
                        return Err(ProgramError::ForbiddenImport {
                            module: import.module.to_owned(),
                            name: import.name.to_owned(),
                        });
                    }
                    let (TypeRef::Func(type_index) | TypeRef::FuncExact(type_index)) = import.ty else {
                        return Err(ProgramError::NonFunctionImport { name: import.name.to_owned() });
                    };
                    let Some(function) = lookup(import.name) else {
                        return Err(ProgramError::UnknownWasiFunction { name: import.name.to_owned() });
                    };
                    let found = types[types.as_ref().core_type_at_in_module(type_index)].unwrap_func().clone();
                    let expected = &FUNCTIONS[function];
                    if !signature_matches(&found, expected.params, expected.results) {
                        return Err(ProgramError::WrongSignature {
                            name: import.name.to_owned(),
                            found: describe_found(&found),
                            expected: describe_expected(expected.params, expected.results),
                        });
                    }
                    imported_functions += 1;
                    imports.push(import.name.to_owned());
                }
            }
            Payload::FunctionSection(reader) => {
                for type_index in reader {
                    function_types.push(type_index.map_err(invalid)?);
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    memories.push(memory.map_err(invalid)?);
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    match (export.name, export.kind) {
                        ("_start", ExternalKind::Func) => {
                            has_start = true;
                            // Imported functions come first in the function index space; `_start` could in
                            // theory re-export an import, which the WASI function table never matches.
                            start_ok = export
                                .index
                                .checked_sub(imported_functions)
                                .and_then(|local| function_types.get(local as usize))
                                .map(|&type_index| {
                                    let ty = types[types.as_ref().core_type_at_in_module(type_index)].unwrap_func();
                                    ty.params().is_empty() && ty.results().is_empty()
                                })
                                .unwrap_or(false);
                        }
                        ("_initialize", ExternalKind::Func) => has_initialize = true,
                        ("memory", ExternalKind::Memory) => {
                            has_memory = true;
                            // Imports of memories are refused above, so the index is a local memory.
                            if let Some(memory) = memories.get(export.index as usize) {
                                memory_initial_pages = memory.initial;
                                memory_maximum_pages = memory.maximum;
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    if !has_start {
        return Err(ProgramError::NoStart { reactor: has_initialize });
    }
    if !start_ok {
        return Err(ProgramError::BadStart);
    }
    if !has_memory {
        return Err(ProgramError::NoMemory);
    }
    Ok(ProgramInfo { imports, memory_initial_pages, memory_maximum_pages })
}

fn invalid(error: wasmparser::BinaryReaderError) -> ProgramError {
    ProgramError::Invalid { offset: error.offset(), message: error.message().to_owned() }
}

fn signature_matches(found: &FuncType, params: &[ValType], results: &[ValType]) -> bool {
    let same = |wasm: &[WasmValType], wasi: &[ValType]| {
        wasm.len() == wasi.len() && wasm.iter().zip(wasi).all(|(a, b)| *a == to_wasm(*b))
    };
    same(found.params(), params) && same(found.results(), results)
}

fn to_wasm(value: ValType) -> WasmValType {
    match value {
        ValType::I32 => WasmValType::I32,
        ValType::I64 => WasmValType::I64,
    }
}

fn describe_found(ty: &FuncType) -> String {
    let list = |values: &[WasmValType]| values.iter().map(|value| value.to_string()).collect::<Vec<_>>().join(", ");
    format!("({}) -> ({})", list(ty.params()), list(ty.results()))
}

fn describe_expected(params: &[ValType], results: &[ValType]) -> String {
    let list = |values: &[ValType]| {
        values
            .iter()
            .map(|value| match value {
                ValType::I32 => "i32",
                ValType::I64 => "i64",
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", list(params), list(results))
}

#[cfg(test)]
mod tests;
