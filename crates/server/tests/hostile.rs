//! Uploads written to hurt: each gets a 4xx JSON answer, and the server stays up.

mod common;

use common::*;
use superres_import::Family;

/// A PNG signature and IHDR chunk claiming `width`×`height`, and nothing else.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    v.extend_from_slice(&width.to_be_bytes());
    v.extend_from_slice(&height.to_be_bytes());
    v.extend_from_slice(&[8, 2, 0, 0, 0]);
    let crc = crc32fast::hash(&v[12..]);
    v.extend_from_slice(&crc.to_be_bytes());
    // An empty IDAT and IEND, so that a decoder sees a complete (if empty) file.
    v.extend_from_slice(b"\0\0\0\0IDAT\x35\xaf\x06\x1e\0\0\0\0IEND\xae\x42\x60\x82");
    v
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_uploads_get_4xx_json_and_the_server_survives() {
    let server = start_with_models(settings(), vec![tiny_model("m", 2, Family::Rgb)]).await;
    let http = client();
    let good = png(16, 16);
    let svg =
        br#"<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>"#;
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        ("zero bytes", vec![], "empty.png", 422, "corrupt_image"),
        (
            "text",
            b"hello, this is not an image\n".to_vec(),
            "notes.png",
            415,
            "unsupported_format",
        ),
        (
            "truncated png",
            good[..good.len() / 2].to_vec(),
            "cut.png",
            422,
            "corrupt_image",
        ),
        (
            "100000x100000 header",
            png_header(100_000, 100_000),
            "huge.png",
            413,
            "too_large",
        ),
        ("svg", svg.to_vec(), "vector.svg", 415, "unsupported_format"),
        (
            "pdf",
            b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n1 0 obj\n<<>>\nendobj\n".to_vec(),
            "doc.pdf",
            415,
            "unsupported_format",
        ),
        (
            "path traversal name",
            b"GIF89a".to_vec(),
            "../../../../etc/passwd",
            422,
            "corrupt_image",
        ),
    ];
    for path in ["/enhance", "/v1/jobs"] {
        for (what, bytes, name, status, code) in &cases {
            let form = reqwest::multipart::Form::new().part(
                "image",
                reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.to_string()),
            );
            let r = http
                .post(server.url(path))
                .multipart(form)
                .send()
                .await
                .unwrap();
            if path == "/v1/jobs" && r.status() == 202 {
                // Damage past the header only shows when the worker decodes: the job fails.
                let id = r.json::<serde_json::Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let view = wait_for_status(&server, &http, &id, "failed").await;
                assert_eq!(view["status"], "failed", "{what} via {path}: {view}");
                let r = http
                    .get(server.url(&format!("/v1/jobs/{id}/result")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(error_code(r, *status).await, *code, "{what} via {path}");
                continue;
            }
            let got = error_code(r, *status).await;
            assert_eq!(&got, code, "{what} via {path}");
        }
    }

    // A 64 MB random body, over the 50 MB limit.
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(random_bytes(64 << 20)).file_name("big.bin"),
    );
    match http
        .post(server.url("/enhance"))
        .multipart(form)
        .send()
        .await
    {
        Ok(r) => assert_eq!(error_code(r, 413).await, "too_large"),
        // The server may close the connection before the client finishes sending: also a
        // refusal, as long as the server is still there afterwards.
        Err(e) => eprintln!("64 MB upload: connection closed early ({e})"),
    }

    let r = http
        .post(server.url("/enhance"))
        .multipart(image_form(good))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "still serving");
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    server.stop().await;
}
