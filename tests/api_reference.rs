//! docs/api-reference.md is generated from the comments in proto/, so the API reference cannot
//! drift from the API: this test compiles the proto (with protox, as the build does), renders
//! every service, method, message, field and enum value with its comment, and compares the result
//! with the committed page. After changing the proto, regenerate the page with
//! `FLOODGATE_UPDATE_DOCS=1 cargo test --test api_reference`.

use std::fmt::Write as _;
use std::path::PathBuf;

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::source_code_info::Location;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
};

const PROTO: &str = "floodgate/v1/floodgate.proto";
const PACKAGE_PREFIX: &str = ".floodgate.v1.";

// Field numbers of protobuf's own descriptor messages (`FileDescriptorProto` and the rest),
// which is how `SourceCodeInfo` paths name what a comment belongs to.
const FILE_MESSAGE: i32 = 4;
const FILE_ENUM: i32 = 5;
const FILE_SERVICE: i32 = 6;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED: i32 = 3;
const MESSAGE_ENUM: i32 = 4;
const ENUM_VALUE: i32 = 2;
const SERVICE_METHOD: i32 = 2;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The comment written above (or, failing that, beside) the element at `path`, on one line.
fn comment(file: &FileDescriptorProto, path: &[i32]) -> String {
    let location: Option<&Location> = file
        .source_code_info
        .as_ref()
        .and_then(|info| info.location.iter().find(|l| l.path == path));
    let text = location
        .and_then(|l| l.leading_comments.clone().or(l.trailing_comments.clone()))
        .unwrap_or_default();
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// A type as a reader of the proto writes it, linked to its section when it is floodgate's own.
fn type_name(field: &FieldDescriptorProto, maps: &[(String, String)]) -> String {
    let named = |name: &str| match name.strip_prefix(PACKAGE_PREFIX) {
        Some(own) => format!("[`{own}`](#{})", own.to_lowercase().replace('.', "")),
        None => format!("`{}`", name.trim_start_matches('.')),
    };
    let base = match field.r#type() {
        Type::Message | Type::Enum => {
            let name = field.type_name();
            if let Some((_, shown)) = maps.iter().find(|(full, _)| full == name) {
                return shown.clone();
            }
            named(name)
        }
        scalar => format!("`{}`", scalar_name(scalar)),
    };
    if field.label() == Label::Repeated {
        format!("repeated {base}")
    } else if field.proto3_optional() {
        format!("optional {base}")
    } else {
        base
    }
}

fn scalar_name(scalar: Type) -> &'static str {
    match scalar {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
        Type::Group | Type::Message | Type::Enum => "message",
    }
}

/// The map-entry messages protoc makes for `map<K, V>` fields, as (full name, `map<K, V>`).
fn map_entries(file: &FileDescriptorProto) -> Vec<(String, String)> {
    let mut found = Vec::new();
    fn walk(message: &DescriptorProto, scope: &str, found: &mut Vec<(String, String)>) {
        let full = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            if nested.options.as_ref().is_some_and(|o| o.map_entry()) {
                let [key, value] = [&nested.field[0], &nested.field[1]];
                let shown = format!(
                    "map<{}, {}>",
                    type_name(key, &[]).trim_matches('`'),
                    type_name(value, &[]).trim_matches('`')
                );
                found.push((format!("{full}.{}", nested.name()), format!("`{shown}`")));
            } else {
                walk(nested, &full, found);
            }
        }
    }
    for message in &file.message_type {
        walk(message, PACKAGE_PREFIX.trim_end_matches('.'), &mut found);
    }
    found
}

fn render_message(
    out: &mut String,
    file: &FileDescriptorProto,
    message: &DescriptorProto,
    path: &[i32],
    scope: &str,
    maps: &[(String, String)],
) {
    if message.options.as_ref().is_some_and(|o| o.map_entry()) {
        return;
    }
    let name = format!("{scope}{}", message.name());
    let _ = writeln!(out, "### {name}\n");
    let about = comment(file, path);
    if !about.is_empty() {
        let _ = writeln!(out, "{about}\n");
    }
    if !message.field.is_empty() {
        let _ = writeln!(out, "| field | type | description |\n|---|---|---|");
        for (i, field) in message.field.iter().enumerate() {
            let field_path = [path, &[MESSAGE_FIELD, index(i)]].concat();
            let _ = writeln!(
                out,
                "| `{}` | {} | {} |",
                field.name(),
                type_name(field, maps),
                comment(file, &field_path)
            );
        }
        out.push('\n');
    }
    for (i, nested) in message.nested_type.iter().enumerate() {
        let nested_path = [path, &[MESSAGE_NESTED, index(i)]].concat();
        render_message(out, file, nested, &nested_path, &format!("{name}."), maps);
    }
    for (i, nested) in message.enum_type.iter().enumerate() {
        let nested_path = [path, &[MESSAGE_ENUM, index(i)]].concat();
        render_enum(out, file, nested, &nested_path, &format!("{name}."));
    }
}

fn render_enum(
    out: &mut String,
    file: &FileDescriptorProto,
    enumeration: &EnumDescriptorProto,
    path: &[i32],
    scope: &str,
) {
    let _ = writeln!(out, "### {scope}{}\n", enumeration.name());
    let about = comment(file, path);
    if !about.is_empty() {
        let _ = writeln!(out, "{about}\n");
    }
    let _ = writeln!(out, "| value | number | description |\n|---|---|---|");
    for (i, value) in enumeration.value.iter().enumerate() {
        let value_path = [path, &[ENUM_VALUE, index(i)]].concat();
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            value.name(),
            value.number(),
            comment(file, &value_path)
        );
    }
    out.push('\n');
}

fn index(i: usize) -> i32 {
    i32::try_from(i).expect("a proto file has fewer than 2^31 elements")
}

/// The whole page.
fn render(file: &FileDescriptorProto) -> String {
    let maps = map_entries(file);
    let mut out = String::from(
        "# API reference\n\n\
         Generated from the comments in `proto/floodgate/v1/floodgate.proto` by \
         `tests/api_reference.rs` (which fails when this page is out of date; regenerate it with \
         `FLOODGATE_UPDATE_DOCS=1 cargo test --test api_reference`). For how to call the API, \
         tokens and error codes, see [api.md](api.md).\n\n## Services\n\n",
    );
    for (s, service) in file.service.iter().enumerate() {
        let path = [FILE_SERVICE, index(s)];
        let _ = writeln!(out, "### {}\n", service.name());
        let about = comment(file, &path);
        if !about.is_empty() {
            let _ = writeln!(out, "{about}\n");
        }
        let _ = writeln!(
            out,
            "| method | request | response | description |\n|---|---|---|---|"
        );
        for (m, method) in service.method.iter().enumerate() {
            let shown = |name: &str| {
                let own = name.trim_start_matches(PACKAGE_PREFIX);
                format!("[`{own}`](#{})", own.to_lowercase())
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                method.name(),
                shown(method.input_type()),
                shown(method.output_type()),
                comment(file, &[FILE_SERVICE, index(s), SERVICE_METHOD, index(m)])
            );
        }
        out.push('\n');
    }
    out.push_str("## Messages\n\n");
    for (i, message) in file.message_type.iter().enumerate() {
        render_message(
            &mut out,
            file,
            message,
            &[FILE_MESSAGE, index(i)],
            "",
            &maps,
        );
    }
    out.push_str("## Enums\n\n");
    for (i, enumeration) in file.enum_type.iter().enumerate() {
        render_enum(&mut out, file, enumeration, &[FILE_ENUM, index(i)], "");
    }
    out.trim_end().to_owned() + "\n"
}

#[test]
fn the_api_reference_page_matches_the_proto() {
    let set = protox::compile([PROTO], [root().join("proto")]).expect("the proto compiles");
    let file = set
        .file
        .iter()
        .find(|f| f.name() == PROTO)
        .expect("the compiled set holds the proto itself");
    let page = render(file);
    let path = root().join("docs/api-reference.md");
    if std::env::var_os("FLOODGATE_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &page).expect("docs/api-reference.md is writable");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == page,
        "docs/api-reference.md is out of date with the proto; regenerate it with \
         `FLOODGATE_UPDATE_DOCS=1 cargo test --test api_reference`"
    );
}

#[test]
fn every_rpc_and_message_has_a_description() {
    let set = protox::compile([PROTO], [root().join("proto")]).expect("the proto compiles");
    let file = set.file.iter().find(|f| f.name() == PROTO).unwrap();
    let mut missing = Vec::new();
    for (s, service) in file.service.iter().enumerate() {
        if comment(file, &[FILE_SERVICE, index(s)]).is_empty() {
            missing.push(format!("service {}", service.name()));
        }
        for (m, method) in service.method.iter().enumerate() {
            if comment(file, &[FILE_SERVICE, index(s), SERVICE_METHOD, index(m)]).is_empty() {
                missing.push(format!("rpc {}.{}", service.name(), method.name()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented in the proto (write a comment above each): {missing:?}"
    );
}
