//! Instrumentation: rewrites a checked program so that every engine meters and limits it the same way.
//!
//! The coordinator instruments each program once, on upload, and workers run only the instrumented
//! module. The rewrite adds four exported globals and one function, and changes function bodies in two
//! ways:
//!
//! The names of the globals are part of the worker contract and live in `protocol::metering`.
//!
//! - **Work units.** Every function body is cut into straight-line segments, each ending at a control
//!   instruction (`block`, `loop`, `if`, `else`, `end`, `br`, `br_if`, `br_table`, `return`,
//!   `return_call*`, `unreachable`). On entry to a segment, its number of original instructions is added
//!   to [`WORK_UNITS`]. So one work unit is one instruction of the original program, charged per segment
//!   on entry: the count is identical on every engine and device.
//! - **Work limit.** At every function entry and loop header, if [`WORK_UNITS`] exceeds [`WORK_LIMIT`], the
//!   program sets [`FLAG_WORK_LIMIT`] in [`FLAGS`] and traps. Every infinite execution passes a loop
//!   header or a function entry, so the limit bounds every run.
//! - **Memory limit.** Every `memory.grow` becomes a call to an added function that refuses growth past
//!   [`MEMORY_LIMIT_PAGES`] (and records any refused growth with [`FLAG_MEMORY_REFUSED`]), so memory is
//!   limited the same way in browsers, where the host cannot intercept growth.
//!
//! Hosts set [`WORK_LIMIT`] and [`MEMORY_LIMIT_PAGES`] after instantiation and before `_start`, and read
//! [`WORK_UNITS`] and [`FLAGS`] afterwards. Function, global and type indices of the original program are
//! unchanged: everything is appended.

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{
    CodeSection, ConstExpr, CustomSection, ExportKind, ExportSection, Function, FunctionSection, GlobalSection,
    GlobalType, Instruction, Module, RawSection, TypeSection, ValType,
};
use wasmparser::{FunctionBody, Operator, Parser, Payload, Validator};

use crate::{FEATURES, ProgramError};

pub use distributivecom_protocol::metering::{
    FLAG_MEMORY_REFUSED, FLAG_WORK_LIMIT, FLAGS, MEMORY_LIMIT_PAGES, WORK_LIMIT, WORK_UNITS,
};

const RESERVED_EXPORTS: [&str; 4] = [WORK_UNITS, WORK_LIMIT, FLAGS, MEMORY_LIMIT_PAGES];

/// Indices of what the rewrite adds.
#[derive(Clone, Copy)]
struct Added {
    work_units: u32,
    work_limit: u32,
    flags: u32,
    memory_limit: u32,
    grow_function: u32,
    grow_type: u32,
}

/// Counts of the original module's index spaces.
#[derive(Default)]
struct Counts {
    types: u32,
    imported_functions: u32,
    functions: u32,
    globals: u32,
}

fn failed(message: impl std::fmt::Display) -> ProgramError {
    ProgramError::Instrumentation(message.to_string())
}

fn counts(bytes: &[u8]) -> Result<Counts, ProgramError> {
    let mut counts = Counts::default();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(failed)? {
            Payload::TypeSection(reader) => counts.types = reader.count(),
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    if matches!(import.map_err(failed)?.ty, wasmparser::TypeRef::Func(_)) {
                        counts.imported_functions += 1;
                    }
                }
            }
            Payload::FunctionSection(reader) => counts.functions = reader.count(),
            Payload::GlobalSection(reader) => counts.globals = reader.count(),
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(failed)?;
                    if RESERVED_EXPORTS.contains(&export.name) {
                        return Err(failed(format!("the program already exports {}, a reserved name", export.name)));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(counts)
}

/// Instruments a program that passed [`crate::check`]. The result is validated before it is returned.
pub fn instrument(bytes: &[u8]) -> Result<Vec<u8>, ProgramError> {
    let counts = counts(bytes)?;
    let added = Added {
        work_units: counts.globals,
        work_limit: counts.globals + 1,
        flags: counts.globals + 2,
        memory_limit: counts.globals + 3,
        grow_function: counts.imported_functions + counts.functions,
        grow_type: counts.types,
    };
    let mut reencoder = RoundtripReencoder;
    let mut module = Module::new();
    let mut globals_written = false;
    let mut code: Option<CodeSection> = None;
    let mut bodies_left = 0u32;

    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(failed)?;
        // The global section comes before the export section; a module without one gets ours there.
        if matches!(payload, Payload::ExportSection(_) | Payload::StartSection { .. } | Payload::ElementSection(_))
            && !globals_written
        {
            module.section(&added_globals(GlobalSection::new()));
            globals_written = true;
        }
        match payload {
            Payload::TypeSection(reader) => {
                let mut types = TypeSection::new();
                reencoder.parse_type_section(&mut types, reader).map_err(failed)?;
                types.ty().function([ValType::I32], [ValType::I32]);
                module.section(&types);
            }
            Payload::FunctionSection(reader) => {
                let mut functions = FunctionSection::new();
                reencoder.parse_function_section(&mut functions, reader).map_err(failed)?;
                functions.function(added.grow_type);
                module.section(&functions);
            }
            Payload::GlobalSection(reader) => {
                let mut globals = GlobalSection::new();
                reencoder.parse_global_section(&mut globals, reader).map_err(failed)?;
                module.section(&added_globals(globals));
                globals_written = true;
            }
            Payload::ExportSection(reader) => {
                let mut exports = ExportSection::new();
                reencoder.parse_export_section(&mut exports, reader).map_err(failed)?;
                exports.export(WORK_UNITS, ExportKind::Global, added.work_units);
                exports.export(WORK_LIMIT, ExportKind::Global, added.work_limit);
                exports.export(FLAGS, ExportKind::Global, added.flags);
                exports.export(MEMORY_LIMIT_PAGES, ExportKind::Global, added.memory_limit);
                module.section(&exports);
            }
            Payload::CodeSectionStart { count, .. } => {
                code = Some(CodeSection::new());
                bodies_left = count;
                if count == 0 {
                    finish_code(&mut module, code.take(), &added);
                }
            }
            Payload::CodeSectionEntry(body) => {
                let section = code.as_mut().ok_or_else(|| failed("a function body outside the code section"))?;
                section.function(&rewrite(&body, &added)?);
                bodies_left -= 1;
                if bodies_left == 0 {
                    finish_code(&mut module, code.take(), &added);
                }
            }
            Payload::CustomSection(reader) => {
                module.section(&CustomSection { name: reader.name().into(), data: reader.data().into() });
            }
            Payload::Version { .. } | Payload::End(_) => {}
            other => {
                // Sections we do not change are copied byte for byte.
                let Some((id, range)) = other.as_section() else {
                    return Err(failed(format!("unexpected part of the module: {other:?}")));
                };
                module.section(&RawSection { id, data: &bytes[range] });
            }
        }
    }
    let instrumented = module.finish();
    Validator::new_with_features(FEATURES)
        .validate_all(&instrumented)
        .map_err(|error| failed(format!("the instrumented module is invalid: {error}")))?;
    Ok(instrumented)
}

fn added_globals(mut globals: GlobalSection) -> GlobalSection {
    let mutable = |val_type| GlobalType { val_type, mutable: true, shared: false };
    globals.global(mutable(ValType::I64), &ConstExpr::i64_const(0));
    // No limit until the host sets one; the comparison is unsigned.
    globals.global(mutable(ValType::I64), &ConstExpr::i64_const(-1));
    globals.global(mutable(ValType::I32), &ConstExpr::i32_const(0));
    // 65536 pages: all of a 32-bit memory.
    globals.global(mutable(ValType::I32), &ConstExpr::i32_const(65536));
    globals
}

/// Appends the growth function's body and writes the code section.
fn finish_code(module: &mut Module, code: Option<CodeSection>, added: &Added) {
    let mut code = code.unwrap_or_default();
    code.function(&grow_function(added));
    module.section(&code);
}

/// `(func (param $pages i32) (result i32) (local $result i32) ...)`: `memory.grow` with the limit.
fn grow_function(added: &Added) -> Function {
    let mut function = Function::new([(1, ValType::I32)]);
    let refuse = [
        Instruction::GlobalGet(added.flags),
        Instruction::I32Const(FLAG_MEMORY_REFUSED),
        Instruction::I32Or,
        Instruction::GlobalSet(added.flags),
    ];
    let mut body = vec![
        // if memory.size + pages > limit (as unsigned 64-bit numbers, so nothing overflows)
        Instruction::MemorySize(0),
        Instruction::I64ExtendI32U,
        Instruction::LocalGet(0),
        Instruction::I64ExtendI32U,
        Instruction::I64Add,
        Instruction::GlobalGet(added.memory_limit),
        Instruction::I64ExtendI32U,
        Instruction::I64GtU,
        Instruction::If(wasm_encoder::BlockType::Result(ValType::I32)),
    ];
    body.extend(refuse.iter().cloned());
    body.extend([
        Instruction::I32Const(-1),
        Instruction::Else,
        Instruction::LocalGet(0),
        Instruction::MemoryGrow(0),
        Instruction::LocalTee(1),
        Instruction::I32Const(-1),
        Instruction::I32Eq,
        Instruction::If(wasm_encoder::BlockType::Empty),
    ]);
    body.extend(refuse.iter().cloned());
    body.extend([Instruction::End, Instruction::LocalGet(1), Instruction::End, Instruction::End]);
    for instruction in &body {
        function.instruction(instruction);
    }
    function
}

/// Whether an instruction ends a straight-line segment.
fn ends_segment(operator: &Operator<'_>) -> bool {
    matches!(
        operator,
        Operator::Block { .. }
            | Operator::Loop { .. }
            | Operator::If { .. }
            | Operator::Else
            | Operator::End
            | Operator::Br { .. }
            | Operator::BrIf { .. }
            | Operator::BrTable { .. }
            | Operator::Return
            | Operator::ReturnCall { .. }
            | Operator::ReturnCallIndirect { .. }
            | Operator::Unreachable
    )
}

fn charge(function: &mut Function, added: &Added, units: u64) {
    function.instruction(&Instruction::GlobalGet(added.work_units));
    function.instruction(&Instruction::I64Const(units as i64));
    function.instruction(&Instruction::I64Add);
    function.instruction(&Instruction::GlobalSet(added.work_units));
}

fn check_limit(function: &mut Function, added: &Added) {
    for instruction in [
        Instruction::GlobalGet(added.work_units),
        Instruction::GlobalGet(added.work_limit),
        Instruction::I64GtU,
        Instruction::If(wasm_encoder::BlockType::Empty),
        Instruction::GlobalGet(added.flags),
        Instruction::I32Const(FLAG_WORK_LIMIT),
        Instruction::I32Or,
        Instruction::GlobalSet(added.flags),
        Instruction::Unreachable,
        Instruction::End,
    ] {
        function.instruction(&instruction);
    }
}

/// Rewrites one function body: segment charges, limit checks, and `memory.grow` through the limit.
fn rewrite(body: &FunctionBody<'_>, added: &Added) -> Result<Function, ProgramError> {
    let mut reencoder = RoundtripReencoder;
    let mut locals = Vec::new();
    for local in body.get_locals_reader().map_err(failed)? {
        let (count, value_type) = local.map_err(failed)?;
        locals.push((count, reencoder.val_type(value_type).map_err(failed)?));
    }
    let mut operators = Vec::new();
    let mut reader = body.get_operators_reader().map_err(failed)?;
    while !reader.eof() {
        operators.push(reader.read().map_err(failed)?);
    }
    // The length of the segment starting at each index that starts one.
    let mut segment_lengths = vec![0u64; operators.len()];
    let mut start = 0;
    for (index, operator) in operators.iter().enumerate() {
        if ends_segment(operator) || index + 1 == operators.len() {
            segment_lengths[start] = (index + 1 - start) as u64;
            start = index + 1;
        }
    }

    let mut function = Function::new(locals);
    if let Some(&first) = segment_lengths.first() {
        charge(&mut function, added, first);
        check_limit(&mut function, added);
    }
    let last = operators.len().saturating_sub(1);
    for (index, operator) in operators.into_iter().enumerate() {
        let is_loop = matches!(operator, Operator::Loop { .. });
        let ends = ends_segment(&operator);
        match operator {
            Operator::MemoryGrow { mem: 0 } => function.instruction(&Instruction::Call(added.grow_function)),
            operator => function.instruction(&reencoder.instruction(operator).map_err(failed)?),
        };
        if ends && index < last {
            charge(&mut function, added, segment_lengths[index + 1]);
            if is_loop {
                check_limit(&mut function, added);
            }
        }
    }
    Ok(function)
}
