//! What requests carry and where files live: ComfyUI's folders and subfolder paths, JSON
//! answers and bodies, `multipart/form-data`, and the checks `/view` and `/upload/image` make.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Folders and paths
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Folder {
    Input,
    Output,
    Temp,
}

impl Folder {
    pub(super) fn parse(name: &str) -> Option<Folder> {
        match name {
            "input" => Some(Folder::Input),
            "output" => Some(Folder::Output),
            "temp" => Some(Folder::Temp),
            _ => None,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Folder::Input => "input",
            Folder::Output => "output",
            Folder::Temp => "temp",
        }
    }
}

/// `folder_paths.annotated_filepath`: `name [output]` names a file in another folder.
pub(super) fn annotated_filepath(name: &str) -> (&str, Option<Folder>) {
    for folder in [Folder::Output, Folder::Input, Folder::Temp] {
        if let Some(stripped) = name.strip_suffix(&format!(" [{}]", folder.name())) {
            return (stripped, Some(folder));
        }
    }
    (name, None)
}

/// A subfolder as `os.path.normpath` leaves it, or `None` when it leaves its base folder.
pub(super) fn normalize_subfolder(subfolder: &str) -> Option<String> {
    if subfolder.starts_with('/') || subfolder.starts_with('\\') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in subfolder.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

pub(super) fn join_subfolder(subfolder: &str, name: &str) -> String {
    if subfolder.is_empty() {
        name.to_owned()
    } else {
        format!("{subfolder}/{name}")
    }
}

/// `os.path.splitext`.
pub(super) fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(dot) if name[..dot].chars().any(|c| c != '.') => (&name[..dot], &name[dot..]),
        _ => (name, ""),
    }
}

// ---------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn ok_json(body: &Value) -> Response {
    json_response(StatusCode::OK, body)
}

/// What aiohttp answers when a handler raises.
pub(super) fn internal_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "500 Internal Server Error\n\nServer got itself in trouble",
    )
        .into_response()
}

/// `await request.json()` on a body that may be empty: `None` when it is not JSON.
pub(super) fn parse_json(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

// ---------------------------------------------------------------------------------------------
// /view and /upload/image
// ---------------------------------------------------------------------------------------------

/// The file a `GET /view` query names, as `(folder, subfolder, name)`, checked as ComfyUI checks
/// it: 404 without a filename, 400 for a path in it or an unknown `type`, 403 for a subfolder
/// outside its folder.
pub(super) fn view_target(
    query: &HashMap<String, String>,
) -> Result<(Folder, String, String), StatusCode> {
    let Some(filename) = query.get("filename") else {
        return Err(StatusCode::NOT_FOUND);
    };
    let (filename, annotated) = annotated_filepath(filename);
    if filename.is_empty() || filename.starts_with('/') || filename.contains("..") {
        return Err(StatusCode::BAD_REQUEST);
    }
    let folder = match annotated {
        Some(folder) => folder,
        None => match Folder::parse(query.get("type").map_or("output", String::as_str)) {
            Some(folder) => folder,
            None => return Err(StatusCode::BAD_REQUEST),
        },
    };
    let subfolder = match query.get("subfolder") {
        Some(subfolder) => match normalize_subfolder(subfolder) {
            Some(subfolder) => subfolder,
            None => return Err(StatusCode::FORBIDDEN),
        },
        None => String::new(),
    };
    let name = filename.rsplit('/').next().unwrap_or(filename);
    Ok((folder, subfolder, name.to_owned()))
}

/// A file as `/view` sends it: a content type by its extension, its name as the attachment's.
pub(super) fn file_response(name: &str, bytes: Bytes) -> Response {
    let content_type = match name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
    {
        Some(ext) if ext == "png" => "image/png",
        Some(ext) if ext == "jpg" || ext == "jpeg" => "image/jpeg",
        Some(ext) if ext == "webp" => "image/webp",
        Some(ext) if ext == "gif" => "image/gif",
        Some(ext) if ext == "mp4" => "video/mp4",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, format!("filename=\"{name}\"")),
        ],
        bytes,
    )
        .into_response()
}

/// The form of a `POST /upload/image`.
pub(super) struct Upload {
    /// The image's file name, with `/` and `\` escaped as ComfyUI escapes them.
    pub(super) filename: String,
    pub(super) data: Bytes,
    pub(super) overwrite: bool,
    /// `type` as sent (and answered back), and the folder it names.
    pub(super) kind: String,
    pub(super) folder: Folder,
    /// `subfolder` as sent (and answered back), and as the file is stored.
    pub(super) subfolder: String,
    pub(super) stored_subfolder: String,
}

/// The upload form of a request, checked as ComfyUI checks it: 400 when the body is not
/// multipart, has no named `image` file or names a subfolder outside its folder; 500 (the
/// handler raises) for an unknown `type`.
pub(super) fn upload_form(headers: &HeaderMap, body: &Bytes) -> Result<Upload, StatusCode> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let Some(parts) = parse_multipart(content_type, body) else {
        return Err(StatusCode::BAD_REQUEST);
    };
    let field = |name: &str| {
        parts
            .iter()
            .find(|part| part.name == name && part.filename.is_none())
            .map(|part| String::from_utf8_lossy(&part.data).into_owned())
    };
    let Some(image) = parts
        .iter()
        .find(|part| part.name == "image" && part.filename.is_some())
    else {
        return Err(StatusCode::BAD_REQUEST);
    };
    let filename = image
        .filename
        .as_deref()
        .unwrap_or_default()
        .replace('/', "%2F")
        .replace('\\', "%5C");
    if filename.is_empty() {
        return Err(StatusCode::BAD_REQUEST);
    }
    let overwrite = field("overwrite").is_some_and(|value| value == "true" || value == "1");
    let kind = field("type").unwrap_or_else(|| "input".to_owned());
    let Some(folder) = Folder::parse(&kind) else {
        return Err(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let subfolder = field("subfolder").unwrap_or_default();
    let Some(stored_subfolder) = normalize_subfolder(&subfolder) else {
        return Err(StatusCode::BAD_REQUEST);
    };
    Ok(Upload {
        filename,
        data: image.data.clone(),
        overwrite,
        kind,
        folder,
        subfolder,
        stored_subfolder,
    })
}

// ---------------------------------------------------------------------------------------------
// multipart/form-data
// ---------------------------------------------------------------------------------------------

struct Part {
    name: String,
    filename: Option<String>,
    data: Bytes,
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    (from..=haystack.len() - needle.len()).find(|&at| &haystack[at..at + needle.len()] == needle)
}

/// `key=value` parameters of a header value (`form-data; name="image"; filename="a.png"`).
fn header_params(value: &str) -> HashMap<String, String> {
    value
        .split(';')
        .skip(1)
        .filter_map(|param| {
            let (key, value) = param.split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(|v| v.replace("\\\"", "\"").replace("\\\\", "\\"))
                .unwrap_or_else(|| value.to_owned());
            Some((key.trim().to_ascii_lowercase(), value))
        })
        .collect()
}

fn parse_multipart(content_type: &str, body: &Bytes) -> Option<Vec<Part>> {
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return None;
    }
    let boundary = header_params(content_type).remove("boundary")?;
    let delimiter = format!("--{boundary}").into_bytes();
    let closing = format!("\r\n--{boundary}").into_bytes();
    let mut at = find(body, &delimiter, 0)? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Some(parts);
        }
        at = find(body, b"\r\n", at)? + 2;
        let headers_end = find(body, b"\r\n\r\n", at)?;
        let headers = String::from_utf8_lossy(&body[at..headers_end]).into_owned();
        let data_start = headers_end + 4;
        let data_end = find(body, &closing, data_start)?;
        let disposition = headers
            .split("\r\n")
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default();
        let mut params = header_params(&disposition);
        parts.push(Part {
            name: params.remove("name").unwrap_or_default(),
            filename: params.remove("filename"),
            data: body.slice(data_start..data_end),
        });
        at = data_end + closing.len();
    }
}
