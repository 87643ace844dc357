//! The upload path of `POST /enhance` and `POST /v1/jobs` up to the queue: the multipart
//! extractor (`superres_server::upload::read_upload`: the query string, the multipart
//! framing, the `image`, `model` and `format` fields, an `image` that is a video streamed to
//! its own file) and then the header check (`check_header`) on the image it found.
//!
//! An input is laid out as `QUERY \n CONTENT-TYPE \n BODY`, so the fuzzer controls the
//! query string, the content type (boundary included) and the body. Any input must give an
//! upload whose text fields are within their limit, or a 4xx error: a malformed request is
//! never a server error.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Uri, header};
use libfuzzer_sys::fuzz_target;
use superres_server::media::{Media, VideoUploads};
use superres_server::upload::{MAX_TEXT_FIELD, UploadLimits, check_header, read_upload};

#[global_allocator]
static ALLOC: superres_fuzz::BoundedAlloc = superres_fuzz::BoundedAlloc;

/// The body limit the extractor reports in a 413 (the router's layer enforces it; here
/// axum's default limit of 2 MB applies, beyond any 64 KiB input).
const LIMIT: usize = 50_000_000;

/// Video uploads go to a folder of this run's (ffmpeg is not needed to store them), up to
/// a limit some inputs pass.
const VIDEO_LIMIT: u64 = 4096;

fn videos() -> &'static VideoUploads {
    static VIDEOS: OnceLock<VideoUploads> = OnceLock::new();
    VIDEOS.get_or_init(|| {
        VideoUploads::with_tools(None, VIDEO_LIMIT, None).expect("a folder for videos")
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

fn line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fuzz_target!(|data: &[u8]| {
    let (query, rest) = line(data);
    let (content_type, body) = line(rest);
    // Requests hyper would not deliver (a URI or header value it cannot parse) are out of
    // scope.
    let Ok(uri) = format!("/enhance?{}", String::from_utf8_lossy(query)).parse::<Uri>() else {
        return;
    };
    let Ok(content_type) = HeaderValue::from_bytes(content_type) else {
        return;
    };
    let mut request = Request::new(Body::from(body.to_vec()));
    *request.method_mut() = axum::http::Method::POST;
    *request.uri_mut() = uri;
    request
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    let limits = UploadLimits {
        image_bytes: LIMIT,
        video: Some(videos()),
    };
    match runtime().block_on(read_upload(request, limits)) {
        Ok(upload) => {
            for text in [&upload.model, &upload.format].into_iter().flatten() {
                assert!(!text.is_empty() && text.len() <= MAX_TEXT_FIELD, "{text:?}");
                assert_eq!(text.trim_ascii(), text, "given options are trimmed");
            }
            match &upload.media {
                Media::Image(bytes) => {
                    if let Err(e) = check_header(bytes, &superres_fuzz::image_limits()) {
                        assert!(e.status().is_client_error(), "{e:?}");
                    }
                }
                Media::Video(file) => {
                    let on_disk = std::fs::metadata(&file.path).map(|m| m.len());
                    assert_eq!(on_disk.ok(), Some(file.len), "the whole upload is stored");
                    assert!(file.len <= VIDEO_LIMIT, "within its limit: {}", file.len);
                }
            }
            if let Err(e) = upload.output_format() {
                assert_eq!(e.status(), 400, "{e:?}");
            }
            match upload.output_size() {
                Ok(size) => {
                    // Any accepted size resolves without overflow for any input size.
                    let _ = size.resolve(65_535, 65_535, 8);
                }
                Err(e) => assert_eq!(e.status(), 400, "{e:?}"),
            }
        }
        Err(e) => assert!(e.status().is_client_error(), "{e:?}"),
    }
});
